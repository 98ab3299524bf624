"""Records are checked before they are believed (reports/integrity.py): a record's sha256 must match its
content, and its stated metrics must be those its own per-unit counts give. `compare` calls a record that
does not check out incomparable (exit 3); `leaderboard` and `upgrade` refuse it."""

import json
from itertools import count
from pathlib import Path

import pytest

from fssbench import registry
from fssbench.harness.errors import UsageError
from fssbench.harness.record import parse_record, read_record, write_record
from fssbench.harness.store import STORE_NAME, ResultsStore
from fssbench.reports.integrity import verify
from fssbench.reports.leaderboard import build_tables
from fssbench.reports.upgrade import check_upgrade_runs
from records_for_tests import make_gfss_record, make_record, with_changes


def edited(record, edit):
    """`record` as read back after `edit` changed its JSON by hand (the hash left as it was)."""
    data = json.loads(record.to_json())
    edit(data)
    return parse_record(data, "edited")


def set_fold_miou(data, value=42.0):
    data["results"][0]["metrics"]["miou"] = value


def move_pixels(data):
    """Move foreground intersection from one episode to another of its class: the fold's sums (and so its
    stated metrics) stay right, only the hash can tell."""
    rows = data["results"][0]["episode_scores"]
    first, second = [row for row in rows if row[1] == rows[0][1] and row[3] >= 5][:2]
    first[3] -= 5
    second[3] += 5


@pytest.fixture
def written(tmp_path):
    """Writes `record` as a JSON file, after `edit` changed it (by hand, the hash left as it was)."""
    files = count()

    def write(record, edit=None):
        data = json.loads(record.to_json())
        if edit:
            edit(data)
        path = tmp_path / f"{next(files)}-{record.run_id}.json"
        path.write_text(json.dumps(data))
        return str(path)
    return write


def test_records_as_fssbench_writes_them_check_out(tmp_path):
    for record in (make_record("f", "protonet", 0.5), make_gfss_record("g", "diam", 0.8),
                   make_gfss_record("c", "diam", 0.7, per_query=False)):
        assert record.sha256 == record.content_sha256() and verify(record) is None
        unsealed = record.model_copy(update={"sha256": None})  # schema 1, or written before records were sealed
        assert verify(unsealed) is None
        path = write_record(unsealed, tmp_path)  # seals the record it is given, so the store gets the hash too
        assert unsealed.sha256 == record.sha256 and read_record(path) == record


def test_schema_1_records_check_out():
    golden = Path(__file__).parent / "golden"
    for name in ("record-schema1-fss.json", "record-schema1-gfss.json"):
        record = read_record(golden / name)
        assert record.sha256 is None and verify(record) is None


def test_compare_refuses_a_record_whose_fold_miou_was_edited(cli, written):
    record = make_record("base", "protonet", 0.5)
    result = cli("compare", written(record), written(record, set_fold_miou))
    assert result.code == 3
    assert "record base is inconsistent: fold 0 states miou 42.0, its episodes give" in result.stdout
    lowered = written(record, lambda data: data["metrics"][0].update(value=42.0))  # read as a regression (exit 1)
    result = cli("compare", written(record), lowered, "--json")
    assert result.code == 3 and json.loads(result.stdout)["reasons"] == [
        f"record base is inconsistent: it states mIoU 42.0 for the mean over folds, its folds give {record.mean_miou}"]
    assert cli("compare", written(record), written(record)).code == 0


def test_compare_refuses_a_record_edited_without_fixing_its_hash(cli, written):
    record = make_record("base", "protonet", 0.5)
    result = cli("compare", written(record, move_pixels), written(record))
    assert result.code == 3
    assert "record base was modified after it was written: its sha256 does not match" in result.stdout
    unsealed = edited(record, move_pixels).model_copy(update={"sha256": None})
    assert verify(unsealed) is None  # its metrics still agree with its episodes


def test_a_consistent_unsealed_record_is_compared(cli, written):
    base = make_record("base", "protonet", 0.5).model_copy(update={"sha256": None})
    worse = make_record("worse", "protonet", 0.3).model_copy(update={"sha256": None})
    assert cli("compare", written(base), written(worse)).code == 1
    assert "states" in verify(edited(base, set_fold_miou))


def test_mean_over_folds_must_be_the_mean_of_the_folds():
    record = make_record("m", "protonet", 0.5)
    changed = edited(record, lambda data: data["metrics"][0].update(value=99.0))
    assert verify(changed) == (f"record m is inconsistent: it states mIoU 99.0 for the mean over folds, its "
                               f"folds give {record.mean_miou}")
    assert verify(with_changes(record, metrics=[])) is None  # nothing stated, nothing to contradict


def test_generalized_fss_records_are_checked():
    record = make_gfss_record("g", "diam", 0.8)
    problem = verify(edited(record, set_fold_miou))
    assert problem.startswith("record g is inconsistent: fold 0 states miou 42.0, its runs give")
    problem = verify(edited(record, lambda data: data["results"][0]["runs"][1].update(base=1.0)))
    assert problem.startswith("record g is inconsistent: fold 0 run 1 states base 1.0, its confusion matrix gives")

    def add_pixels(data):
        data["results"][0]["confusion"]["2"][1][1] += 7
    assert verify(edited(record, add_pixels)) == ("record g is inconsistent: fold 0 run 2's confusion matrix is not "
                                                  "the sum of its queries' confusions")
    converted = make_gfss_record("c", "diam", 0.8, per_query=False)  # the matrices are all there is to check
    problem = verify(edited(converted, lambda data: data["results"][1]["runs"][0].update(novel=99.0)))
    assert problem.startswith("record c is inconsistent: fold 1 run 0 states novel 99.0")
    assert "sha256 does not match" in verify(edited(record, lambda data: data.update(seed=1)))


def test_leaderboard_refuses_a_tampered_record(cli, tmp_path):
    good, tampered = make_record("good", "protonet", 0.5), edited(make_record("bad", "oracle", 0.9), set_fold_miou)
    with pytest.raises(UsageError, match="record bad is inconsistent: fold 0 states miou 42.0"):
        build_tables([good, tampered])
    with ResultsStore(tmp_path / STORE_NAME) as store:
        store.save(good, [])
        store.save(tampered, [])
    result = cli("leaderboard", "--results", str(tmp_path))
    assert result.code == 2 and "record bad is inconsistent" in result.stderr and result.stdout == ""


def test_upgrade_refuses_a_tampered_record():
    reference = with_changes(make_record("a", "diffup", 0.5), backbone="efficientnet-lite0")
    other = with_changes(make_record("b", "diffup", 0.6), backbone="efficientnet-lite1")
    check_upgrade_runs([reference, other])
    with pytest.raises(UsageError, match="record b was modified after it was written"):
        check_upgrade_runs([reference, edited(other, move_pixels)])
    with pytest.raises(UsageError, match="record b is inconsistent: fold 0 states miou 42.0"):
        check_upgrade_runs([reference, edited(other, set_fold_miou)])


@pytest.mark.parametrize("method, protocol", [("Thresholded", "demo-1shot"), ("GfssFirstNovel", "gfss-demo-1shot")])
def test_records_that_eval_writes_and_stores_check_out(cli, tmp_path, method, protocol):
    registry.methods.register(method, f"adapters_for_tests:{method}", "test adapter")  # imperfect, fast methods
    out = tmp_path / "results"
    result = cli("eval", "-m", method, "-p", protocol, "--fold", "0", "--episodes", "2", "--json", "--out", str(out))
    assert result.code == 0, result.stderr
    printed = parse_record(json.loads(result.stdout), "stdout")
    [path] = (out / "runs").glob("*.json")
    with ResultsStore(out / STORE_NAME) as store:
        stored = store.record(printed.run_id)
    assert printed.sha256 is not None and read_record(path) == stored == printed and verify(printed) is None
    compared = cli("compare", str(path), printed.run_id, "--results", str(out))
    assert compared.code == 0 or "is undefined (nan" in compared.stdout  # GFSS: two queries per run show no base class
    assert cli("leaderboard", "--results", str(out)).code == 0
