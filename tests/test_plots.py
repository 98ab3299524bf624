"""Plots from run records: the files exist and decode, and the values drawn are the records' (from the
data each plot function returns, and the marks' ids in the SVG); records that do not check out are
refused; `fssbench plot ...` writes PNG and SVG from the store."""

import statistics
import subprocess
import sys

import pytest
from PIL import Image

from fssbench.harness.errors import UsageError
from fssbench.harness.store import STORE_NAME, ResultsStore
from fssbench.reports import plots
from fssbench.reports.upgrade import upgrade_rows
from records_for_tests import make_gfss_record, make_record, with_changes


def saved(plot, tmp_path, name):
    paths = plot.save(tmp_path / name)
    assert [path.name for path in paths] == [f"{name}.png", f"{name}.svg"]
    with Image.open(paths[0]) as image:
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    svg = paths[1].read_text()
    assert svg.startswith("<?xml") and "</svg>" in svg
    return svg


def test_tradeoff_draws_each_runs_mean_miou_interval_and_time_a_panel_per_shot(tmp_path):
    records = [make_record("r-fast", "alpha", 0.5, compute_ms=20), make_record("r-slow", "beta", 0.8, compute_ms=400),
               make_record("r-5shot", "alpha", 0.6, shot=5, compute_ms=30),
               make_record("r-random", "gamma", 0.1, compute_ms=5, timing_only=True)]
    plot = plots.tradeoff(records)
    svg = saved(plot, tmp_path, "tradeoff")
    drawn = {point.run_ids: point for point in plot.data}
    assert set(drawn) == {("r-fast",), ("r-slow",), ("r-5shot",)}  # a random-init run has no score to draw
    for record in records[:3]:
        point = drawn[(record.run_id,)]
        assert point.value == record.mean_miou and point.ci95 == record.primary.ci95
        assert point.s_per_episode == record.timing.s_per_episode
        assert f'id="point-{record.run_id}"' in svg
    assert {point.panel.rsplit(", ", 1)[1] for point in plot.data} == {"1-shot", "5-shot"}
    assert drawn[("r-fast",)].label == "alpha / toy-net" and drawn[("r-slow",)].label == "beta / toy-net"
    assert "s/episode (log scale)" in svg  # svg.fonttype none: text stays text


def test_tradeoff_puts_runs_that_differ_only_by_seed_in_one_point_as_the_leaderboard_does():
    records = [make_record("s0", "alpha", 0.5, seed=0, manifest_tag="a"),
               make_record("s1", "alpha", 0.6, seed=1, manifest_tag="b", compute_ms=300)]
    (point,) = plots.tradeoff(records).data
    assert point.run_ids == ("s0", "s1")
    assert point.value == pytest.approx(statistics.fmean(r.mean_miou for r in records), abs=1e-12)
    assert point.s_per_episode == pytest.approx(statistics.fmean(r.timing.s_per_episode for r in records), abs=1e-12)


def test_classes_draws_each_folds_per_class_iou_best_first(tmp_path):
    record = make_record("r-classes", "alpha", 0.6)
    plot = plots.classes(record)
    svg = saved(plot, tmp_path, "classes")
    for result in record.results:
        bars = [bar for bar in plot.data if bar.fold == result.fold]
        assert {bar.class_id: bar.iou for bar in bars} == result.per_class_iou
        assert [bar.iou for bar in bars] == sorted(result.per_class_iou.values(), reverse=True)
        assert all(bar.name == f"class{bar.class_id}" and bar.episodes == 10 for bar in bars)
        assert all(f'id="class-{result.fold}-{class_id}"' in svg for class_id in result.per_class_iou)


def test_classes_refuses_gfss_and_timing_only_runs():
    with pytest.raises(UsageError, match="need a scored FSS run"):
        plots.classes(make_gfss_record("g", "diam", 0.7))
    with pytest.raises(UsageError, match="timing-only"):
        plots.classes(make_record("t", "alpha", 0.5, timing_only=True))


def test_upgrade_draws_the_upgrade_tables_deltas_and_paired_intervals(tmp_path):
    reference = make_record("r-small", "alpha", 0.5)
    bigger = with_changes(make_record("r-big", "alpha", 0.6), backbone="big-net")
    plot = plots.upgrade([reference, bigger])
    svg = saved(plot, tmp_path, "upgrade")
    expected = [row for row in upgrade_rows([reference, bigger]) if row.delta is not None]
    assert plot.data == expected and [row.fold for row in plot.data] == ["0", "1", "mean"]
    mean = plot.data[-1]
    assert mean.delta == pytest.approx(bigger.mean_miou - reference.mean_miou, abs=1e-12)
    assert mean.interval[0] < mean.delta < mean.interval[1]
    assert all(f'id="delta-{row.fold}-big-net"' in svg for row in plot.data)


def test_seeds_groups_runs_that_differ_only_by_seed(tmp_path):
    runs = [make_record(f"seed{seed}", "alpha", 0.5 + 0.05 * seed, seed=seed, manifest_tag=f"m{seed}")
            for seed in range(3)]
    other = make_record("beta-0", "beta", 0.7, seed=0)  # another method: a group of one seed, not drawn
    plot = plots.seeds([*runs, other])
    saved(plot, tmp_path, "seeds")
    (group,) = plot.data
    assert group.label == "alpha / toy-net" and group.panel == "toy-1shot"
    assert group.seeds == tuple((r.seed, r.mean_miou, r.run_id) for r in runs)
    values = [r.mean_miou for r in runs]
    assert group.mean == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert group.std == pytest.approx(statistics.stdev(values), abs=1e-12)
    with pytest.raises(UsageError, match="differ only by their seed"):
        plots.seeds([runs[0], other])


def test_a_record_that_does_not_check_out_is_refused():
    record = make_record("r-bad", "alpha", 0.5)
    tampered = with_changes(record, metrics=[{**record.metrics[0].model_dump(), "value": 99.0},
                                             record.metrics[1].model_dump()])
    for draw in (plots.tradeoff, plots.seeds, lambda records: plots.classes(records[0])):
        with pytest.raises(UsageError, match="r-bad is inconsistent"):
            draw([tampered])


def test_the_same_figure_gives_the_same_bytes():
    record = make_record("r-same", "alpha", 0.6)
    assert plots.classes(record).encode("svg") == plots.classes(record).encode("svg")
    assert plots.classes(record).encode("png") == plots.classes(record).encode("png")


def test_plot_commands_write_png_and_svg_from_the_store(cli, tmp_path):
    records = [make_record("r-a", "alpha", 0.5), make_record("r-b", "beta", 0.7, compute_ms=300),
               make_record("r-a1", "alpha", 0.55, seed=1, manifest_tag="s1"),
               with_changes(make_record("r-big", "alpha", 0.6), backbone="big-net")]
    with ResultsStore(tmp_path / STORE_NAME) as store:
        for record in records:
            store.save(record, None)
    for args, stem in ((["tradeoff"], "tradeoff"), (["classes", "r-b"], "classes-r-b"), (["seeds"], "seeds"),
                       (["upgrade", "r-a", "r-big"], "upgrade-alpha-toy-1shot")):
        result = cli("plot", *args, "--results", str(tmp_path))
        assert result.code == 0, result.stderr
        assert (tmp_path / "plots" / f"{stem}.png").is_file() and (tmp_path / "plots" / f"{stem}.svg").is_file()
    result = cli("plot", "upgrade", "r-a", "r-b", "--results", str(tmp_path))
    assert result.code == 2 and "backbone toy-net appears more than once" in result.stderr


@pytest.mark.slow
def test_the_cli_starts_without_matplotlib_or_jinja2():
    code = ("import sys, fssbench.cli; heavy = [m for m in ('matplotlib', 'jinja2') if m in sys.modules]; "
            "sys.exit(str(heavy) if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
