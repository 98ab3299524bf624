"""`check_dataset`: an intact tree passes, a deleted and a truncated file are both reported by path,
counts are compared with the reference counts, and broken layouts are problems, not crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fssbench.harness.errors import UsageError
from fssbench.protocols.datacheck import check_dataset
from test_crossdomain_readers import make_deepglobe_root, make_isic_root, make_lvis_root


# pycocotools 2.0 decodes through numpy 2 with a deprecation warning about __array__; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_an_intact_tree_passes_and_every_file_is_reported_to_the_progress_hook(tmp_path):
    root = make_deepglobe_root(tmp_path / "data")
    calls = []
    report = check_dataset("deepglobe", root, on_file=lambda done, total: calls.append((done, total)))
    assert report.ok and report.problems == []
    assert report.files_checked == 36  # 6 classes x 3 tiles, image and mask
    assert calls[0] == (1, 36) and calls[-1] == (36, 36) and len(calls) == 36
    assert [count.found for count in report.counts] == [3] * 6
    assert report.summary().endswith("OK: no problems found")


def test_a_deleted_and_a_truncated_file_are_reported_by_path(tmp_path):
    root = make_deepglobe_root(tmp_path / "data")
    deleted = root / "Deepglobe" / "2" / "test" / "groundtruth" / "201_sat_12.png"
    truncated = root / "Deepglobe" / "5" / "test" / "origin" / "501_sat_15.jpg"
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    report = check_dataset("deepglobe", root)
    assert len(report.problems) == 2 and report.files_checked == 36
    assert report.problems[0] == f"{deleted} is missing"
    assert report.problems[1].startswith(f"{truncated} is unreadable or truncated")
    assert "re-download" in report.problems[1]
    assert "2 problem(s):" in report.summary() and str(deleted) in report.summary()


def test_a_missing_mask_is_reported(tmp_path):
    root = make_isic_root(tmp_path / "data")
    mask = root / "ISIC" / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000013_segmentation.png"
    mask.unlink()
    report = check_dataset("isic", root)
    assert f"{mask} is missing" in report.problems


def test_counts_are_compared_with_the_reference_counts(tmp_path):
    root = make_isic_root(tmp_path / "data")
    report = check_dataset("isic", root)
    assert [(count.what, count.found, count.expected) for count in report.counts] == [
        ("nevus images", 3, 1867), ("melanoma images", 2, 519), ("seborrheic_keratosis images", 2, 208)]
    assert report.problems == ["nevus images: found 3, expected 1867", "melanoma images: found 2, expected 519",
                               "seborrheic_keratosis images: found 2, expected 208"]
    assert "nevus images: 3 (expected 1867)   <- differs" in report.summary()
    assert report.files_checked == 14


def test_lvis_annotations_are_decoded_for_every_fold(tmp_path):
    root, _ = make_lvis_root(tmp_path / "data")
    report = check_dataset("lvis92i-1shot", root)
    assert report.ok, report.summary()
    assert [count.found for count in report.counts[:2]] == [2, 14]  # fold 0: 2 classes, 7 + 7 images
    assert report.files_checked > len(list((root / "LVIS" / "coco").rglob("*.jpg")))


def test_a_broken_layout_is_a_problem_not_a_crash(tmp_path):
    report = check_dataset("pascal", tmp_path / "nowhere")
    assert len(report.problems) == 1 and "does not exist" in report.problems[0]
    (tmp_path / "data").mkdir()
    report = check_dataset("isaid", tmp_path / "data")
    assert "splits/isaid/val/fold0.txt" in report.problems[0]
    assert "1 problem(s):" in report.summary()


def test_an_unknown_dataset_is_a_usage_error_with_a_suggestion():
    with pytest.raises(UsageError, match="Did you mean 'deepglobe'"):
        check_dataset("deepglob", Path("."))


@pytest.mark.slow
def test_the_data_check_command_exits_non_zero_on_a_damaged_demo(cli, demo_copy):
    assert cli("data", "check", "--dataset", "demo", "--data-root", str(demo_copy)).code == 0
    image = next((demo_copy / "fssbench-demo-v1" / "images").glob("val_00*.png"))
    image.write_bytes(image.read_bytes()[:200])
    result = cli("data", "check", "--dataset", "demo", "--data-root", str(demo_copy))
    assert result.code == 1 and image.name in result.stdout
    assert cli("data", "check", "--dataset", "dmeo").code == 2
