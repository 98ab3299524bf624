"""The typed run record: its checked-in JSON Schema, validation that names the field, and schema-1
records (written before the typed record) still loading."""

import json
from pathlib import Path

import pytest

from fssbench.harness.errors import UsageError
from fssbench.harness.record import json_schema, parse_record, read_record

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"


def test_the_checked_in_json_schema_is_current():
    assert (ROOT / "docs" / "run-record.schema.json").read_text() == json_schema(), (
        "docs/run-record.schema.json is stale; regenerate it: python -c \"from fssbench.harness.record import "
        "json_schema; print(json_schema(), end='')\" > docs/run-record.schema.json")


def test_schema_1_records_load_with_their_figures():
    fss = read_record(GOLDEN / "record-schema1-fss.json")
    old = json.loads((GOLDEN / "record-schema1-fss.json").read_text())
    assert fss.schema_version == 2 and fss.mean_miou == old["mean_miou"]
    assert fss.metric("fbiou").value == old["mean_fbiou"] and fss.primary.ci95 == tuple(old["mean_miou_ci95"])
    assert fss.results[0].episode_scores == [tuple(row) for row in old["results"][0]["episode_scores"]]
    assert fss.dataset.fingerprint["content_sha256"] == old["dataset"]["content_sha256"]
    assert fss.timing.compute_ms_median == old["timing"]["compute_ms_median"]

    gfss = read_record(GOLDEN / "record-schema1-gfss.json")
    old = json.loads((GOLDEN / "record-schema1-gfss.json").read_text())
    assert gfss.task == "gfss" and gfss.metric("harmonic").value == old["gfss"]["harmonic"]
    assert gfss.results[0].query_confusions == []  # schema 1 kept no per-query counts


def test_a_record_with_a_wrong_field_is_refused_naming_the_field(tmp_path):
    record = json.loads((GOLDEN / "record-schema1-fss.json").read_text())
    record["results"][0]["miou"] = "high"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    with pytest.raises(UsageError, match=r"edited.json is not a valid fssbench run record: field results\.0\..*miou"):
        read_record(path)
    with pytest.raises(UsageError, match=r"field seed"):
        parse_record({**parse_record(record | {"results": []}, "x").model_dump(mode="json"), "seed": "zero"}, "y")


def test_a_file_that_is_no_record_says_so(tmp_path):
    (tmp_path / "notes.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="notes.json is not a valid fssbench run record"):
        read_record(tmp_path / "notes.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UsageError, match="invalid JSON"):
        read_record(tmp_path / "broken.json")
