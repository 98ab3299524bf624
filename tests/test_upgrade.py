"""The backbone upgrade table (reports/upgrade.py): per fold and mean, each backbone's score, its delta
against the first backbone with a paired 95% interval, timing and memory; refusals that name the
difference. Synthetic records; `fssbench upgrade` end to end is in test_upgrade_cli.py."""

import csv
import io

import pytest

from fssbench.harness.errors import UsageError
from fssbench.reports.upgrade import check_upgrade_runs, upgrade_csv, upgrade_markdown, upgrade_rows
from records_for_tests import make_gfss_record, make_record, with_changes

DECODER = {"decoder": "cd" * 32}
BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def upgrade_records():
    """DiffUp's decoder with three backbones; each backbone's packaged weights recorded under its name."""
    return [with_changes(make_record(f"r{i}", "diffup", quality), backbone=backbone,
                         weights={**DECODER, backbone: f"0{i}" * 32})
            for i, (backbone, quality) in enumerate(zip(BACKBONES, (0.5, 0.6, 0.45)))]


def test_upgrade_table_gives_each_backbone_and_its_paired_delta_per_fold_and_mean():
    records = upgrade_records()
    rows = upgrade_rows(records)
    assert [(row.fold, row.backbone) for row in rows] == [(fold, backbone) for fold in ("0", "1", "mean")
                                                         for backbone in BACKBONES]
    for row in rows:
        record = next(r for r in records if r.backbone == row.backbone)
        reference = records[0]
        if row.fold == "mean":
            assert row.value == record.mean_miou
            expected = record.mean_miou - reference.mean_miou
        else:
            assert row.value == record.results[int(row.fold)].metrics["miou"]
            expected = row.value - reference.results[int(row.fold)].metrics["miou"]
        assert (row.s_per_episode, row.peak_memory_mb, row.run_id) == (0.11, 512.0, record.run_id)
        if record is reference:
            assert row.delta is None and row.interval is None
        else:
            assert row.delta == pytest.approx(expected) and row.interval[0] < row.delta < row.interval[1]
    lite1_mean = rows[-2]
    assert lite1_mean.delta > 5 and lite1_mean.interval[0] > 0 and rows[-1].interval[1] < 0


def test_upgrade_markdown_has_one_table_per_fold_and_the_mean():
    records = upgrade_records()
    markdown = upgrade_markdown(records)
    assert markdown.startswith("## Backbone upgrade: diffup on toy-1shot\n")
    assert "Fixed weights: decoder:cdcdcdcd. mIoU x100; delta against efficientnet-lite0" in markdown
    assert [line for line in markdown.splitlines() if line.startswith("### ")] == [
        "### fold 0", "### fold 1", "### mean over folds"]
    assert markdown.count("| backbone | mIoU | delta | 95% CI | s/episode | peak MB |") == 3
    assert f"| efficientnet-lite0 | {records[0].mean_miou:.1f} | — | — | 0.110 | 512 |" in markdown
    mean_table = markdown.split("### mean over folds")[1]
    delta = records[1].mean_miou - records[0].mean_miou
    assert f"| efficientnet-lite1 | {records[1].mean_miou:.1f} | {delta:+.1f} | [+" in mean_table


def test_upgrade_csv_has_a_row_per_fold_and_backbone():
    records = upgrade_records()
    rows = list(csv.DictReader(io.StringIO(upgrade_csv(records))))
    assert list(rows[0]) == ["fold", "backbone", "miou", "delta", "delta_ci_low", "delta_ci_high", "s_per_episode",
                             "peak_memory_mb", "run_id"]
    assert [(row["fold"], row["backbone"]) for row in rows][:3] == [("0", backbone) for backbone in BACKBONES]
    assert rows[0]["delta"] == "" and rows[0]["delta_ci_low"] == ""
    mean_lite2 = rows[-1]
    assert mean_lite2["fold"] == "mean" and mean_lite2["run_id"] == "r2"
    assert float(mean_lite2["delta"]) == pytest.approx(records[2].mean_miou - records[0].mean_miou, abs=1e-4)
    assert float(mean_lite2["delta_ci_low"]) < float(mean_lite2["delta"]) < float(mean_lite2["delta_ci_high"])


def test_backbone_weights_may_differ_and_gfss_runs_make_a_table_too():
    given = [with_changes(record, weights={**DECODER, "backbone": f"{i}f" * 32})  # --backbone-weights B=PATH
             for i, record in enumerate(upgrade_records())]
    check_upgrade_runs(given)
    gfss = [with_changes(make_gfss_record(f"g{i}", "diam", quality), backbone=backbone)
            for i, (backbone, quality) in enumerate(zip(BACKBONES[:2], (0.8, 0.7)))]
    markdown = upgrade_markdown(gfss)
    assert "| backbone | mean | delta | 95% CI | s/query | peak MB |" in markdown
    [mean_row] = [row for row in upgrade_rows(gfss) if row.fold == "mean" and row.delta is not None]
    assert mean_row.interval[0] < mean_row.delta < mean_row.interval[1] < 0


@pytest.mark.parametrize("change, message", [
    ({"weights": {"decoder": "ef" * 32, "efficientnet-lite1": "01" * 32}}, "different non-backbone weights"),
    ({"timing_only": True}, "timing-only"),
    ({"protocol_sha256": "f" * 64}, "not comparable: different protocols"),
    ({"evaluation_resolution": "512x512 (squash)"}, "not comparable: different evaluation resolutions"),
    ({"status": "failed"}, "not complete"),
    ({"backbone": "efficientnet-lite0"}, "appears more than once"),
    ({"method": "protonet"}, "differ in method"),
    ({"options": {"ddim_steps": 2}}, "differ in options"),
])
def test_upgrade_table_refuses_runs_that_are_not_comparable(change, message):
    records = upgrade_records()
    with pytest.raises(UsageError, match=message):
        upgrade_rows([records[0], with_changes(records[1], **change)])


def test_upgrade_table_needs_two_runs_and_per_unit_data_for_its_intervals():
    records = upgrade_records()
    with pytest.raises(UsageError, match="at least two backbones"):
        upgrade_rows(records[:1])
    unscored = with_changes(records[1], results=[r.model_copy(update={"episode_scores": []}) for r in records[1].results])
    with pytest.raises(UsageError, match="no paired interval .* per-episode scores"):
        upgrade_rows([records[0], unscored])
