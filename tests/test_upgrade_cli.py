"""`fssbench upgrade` end to end on the demo (tiny budgets): any method that takes a backbone, runs into
the store, the table as Markdown and CSV; flags checked before any run starts."""

import csv

import pytest

from fssbench import registry


@pytest.fixture
def thresholded():
    """A fast test method that declares two backbones (it only records them)."""
    registry.methods.register("test-thresholded", "adapters_for_tests:Thresholded", "test adapter")
    return "test-thresholded"


def upgrade(cli, tmp_path, method, backbones, *flags):
    return cli("upgrade", "--method", method, "-p", "demo-1shot", "--backbones", backbones, "--fold", "0",
               "--episodes", "3", "--device", "cpu", "--out", str(tmp_path / "results"), *flags)


def table_rows(tmp_path, name):
    return list(csv.DictReader((tmp_path / "results" / f"{name}.csv").open()))


def test_upgrade_runs_each_backbone_into_the_store_and_writes_the_table(cli, tmp_path, thresholded):
    result = upgrade(cli, tmp_path, thresholded, "efficientnet-lite0,efficientnet-lite1")
    assert result.code == 0, result.stderr
    name = "upgrade-test-thresholded-demo-1shot-efficientnet-lite0-to-efficientnet-lite1"
    rows = table_rows(tmp_path, name)
    assert [(row["fold"], row["backbone"]) for row in rows] == [
        ("0", "efficientnet-lite0"), ("0", "efficientnet-lite1"),
        ("mean", "efficientnet-lite0"), ("mean", "efficientnet-lite1")]
    assert float(rows[1]["delta"]) == 0.0 and float(rows[1]["delta_ci_low"]) == 0.0  # it ignores its backbone
    markdown = (tmp_path / "results" / f"{name}.md").read_text()
    assert "| backbone | mIoU | delta | 95% CI | s/episode | peak MB |" in markdown and markdown in result.stdout
    runs = sorted((tmp_path / "results" / "runs").glob("*.json"))
    assert len(runs) == 2 and {row["run_id"] for row in rows} == {path.stem for path in runs}
    again = upgrade(cli, tmp_path, thresholded, "efficientnet-lite0,efficientnet-lite1")  # the runs resume
    assert again.code == 0 and sorted((tmp_path / "results" / "runs").glob("*.json")) == runs


@pytest.mark.parametrize("flags, message", [
    (("--backbones", "efficientnet-lite0"), "at least two backbones"),
    (("--backbones", "efficientnet-lite0,efficientnet-lite0"), "given twice"),
    (("--backbones", "efficientnet-lite0,efficientnet-lite2"), "does not run on backbone 'efficientnet-lite2'"),
    (("--backbones", "efficientnet-lite0,efficientnet-lite1", "--backbone-weights", "resnet50=/x.pth"),
     "not one of --backbones"),
    (("--backbones", "efficientnet-lite0,efficientnet-lite1", "--weights", "backbone=/x.pth"),
     "--backbone-weights BACKBONE=PATH"),
])
def test_bad_flags_are_refused_before_any_run(cli, tmp_path, thresholded, flags, message):
    result = cli("upgrade", "--method", thresholded, "-p", "demo-1shot", "--fold", "0", "--episodes", "2",
                 "--device", "cpu", "--out", str(tmp_path / "results"), *flags)
    assert result.code == 2 and message in result.stderr
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.slow
def test_protonet_upgrade_from_efficientnet_lite0_to_lite1(cli, tmp_path):
    result = upgrade(cli, tmp_path, "protonet", "efficientnet-lite0,efficientnet-lite1")
    assert result.code == 0, result.stderr
    rows = table_rows(tmp_path, "upgrade-protonet-demo-1shot-efficientnet-lite0-to-efficientnet-lite1")
    assert [row["backbone"] for row in rows] == ["efficientnet-lite0", "efficientnet-lite1"] * 2
    lite1 = rows[1]
    assert float(lite1["delta_ci_low"]) <= float(lite1["delta"]) <= float(lite1["delta_ci_high"])


@pytest.mark.slow
def test_train_diffup_then_upgrade_keeps_the_decoder_fixed(cli, tmp_path):
    checkpoint = tmp_path / "decoder.pt"
    train = ("train", "diffup", "-p", "demo-1shot", "--fold", "0", "--config", "small", "--steps", "2",
             "--out", str(checkpoint), "--device", "cpu")
    result = cli(*train)
    assert result.code == 0, result.stderr
    again = cli(*train)
    assert again.code == 2 and "--resume" in again.stderr  # a finished checkpoint is never overwritten silently

    result = upgrade(cli, tmp_path, "diffup", "efficientnet-lite0,efficientnet-lite2", "--weights",
                     f"decoder={checkpoint}", "--option", "ddim_steps=2", "--option", "ensemble=1")
    assert result.code == 0, result.stderr
    rows = table_rows(tmp_path, "upgrade-diffup-demo-1shot-efficientnet-lite0-to-efficientnet-lite2")
    assert [(row["fold"], row["backbone"]) for row in rows] == [
        ("0", "efficientnet-lite0"), ("0", "efficientnet-lite2"),
        ("mean", "efficientnet-lite0"), ("mean", "efficientnet-lite2")]
    assert abs(float(rows[1]["delta"]) - (float(rows[1]["miou"]) - float(rows[0]["miou"]))) < 1e-3
    assert "Fixed weights: decoder:" in result.stdout
