"""`fssbench train diffup` and `fssbench upgrade` end to end on the demo (tiny budgets)."""

import csv


def test_train_then_upgrade_writes_the_before_after_delta_table(cli, tmp_path):
    checkpoint = tmp_path / "decoder.pt"
    train = ("train", "diffup", "-p", "demo-1shot", "--fold", "0", "--config", "small", "--steps", "2",
             "--out", str(checkpoint), "--device", "cpu")
    result = cli(*train)
    assert result.code == 0, result.stderr
    assert checkpoint.is_file()
    again = cli(*train)
    assert again.code == 2 and "--resume" in again.stderr  # a finished checkpoint is never overwritten silently

    result = cli("upgrade", "-p", "demo-1shot", "--weights", f"decoder={checkpoint}", "--from", "efficientnet-lite0",
                 "--to", "efficientnet-lite2", "--fold", "0", "--episodes", "2", "--option", "ddim_steps=2",
                 "--option", "ensemble=1", "--device", "cpu", "--out", str(tmp_path / "results"))
    assert result.code == 0, result.stderr
    table = tmp_path / "results" / "upgrade-diffup-demo-1shot-efficientnet-lite0-to-efficientnet-lite2.csv"
    rows = list(csv.DictReader(table.open()))
    assert [row["fold"] for row in rows] == ["0", "mean"]
    assert rows[0]["backbone_before"] == "efficientnet-lite0" and rows[0]["backbone_after"] == "efficientnet-lite2"
    assert abs(float(rows[0]["delta"]) - (float(rows[0]["miou_after"]) - float(rows[0]["miou_before"]))) < 1e-3
    assert "| fold | backbone before | backbone after |" in table.with_suffix(".md").read_text()
