"""The adapter guide's example (docs/examples/colour_prototype.py) runs as written, from its file, and a
local file's source hash is recorded and part of the run's identity."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

import fssbench

DOCS = Path(fssbench.__file__).parent / "docs"
EXAMPLE = DOCS / "examples" / "colour_prototype.py"
CLASS = "ColourPrototypeAdapter"


def run(cli, method: str, out: Path, *extra: str) -> dict:
    result = cli("eval", "--method", method, "--protocol", "demo-1shot", "--episodes", "3", "--out", str(out),
                 "--device", "cpu", "--json", *extra)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def source_digest(file: Path) -> str:
    """As harness/provenance.py names a module's code: sha256 over its file name and bytes."""
    return hashlib.sha256(file.name.encode() + b"\0" + file.read_bytes()).hexdigest()[:16]


def test_the_example_adapter_runs_from_its_file_on_every_fold(cli, tmp_path):
    record = run(cli, f"{EXAMPLE}:{CLASS}", tmp_path)
    assert record["status"] == "complete" and record["method"] == f"colour_prototype.{CLASS}"
    assert record["folds"] == [0, 1, 2, 3] and record["episodes_cap"] == 3
    assert f"(source sha256 {source_digest(EXAMPLE)})" in record["code"]["adapter"]
    assert all(0 <= result["metrics"]["miou"] <= 100 for result in record["results"])


def test_editing_a_local_adapter_file_starts_a_new_run(cli, tmp_path):
    adapter = tmp_path / "mine.py"
    shutil.copy(EXAMPLE, adapter)
    first = run(cli, f"{adapter}:{CLASS}", tmp_path / "out")
    again = run(cli, f"{adapter}:{CLASS}", tmp_path / "out")
    assert again["run_id"] == first["run_id"]  # same code: the same run, resumed from its journal
    adapter.write_text(adapter.read_text().replace('"temperature": 20.0', '"temperature": 5.0'))
    edited = run(cli, f"{adapter}:{CLASS}", tmp_path / "out")
    assert edited["run_id"] != first["run_id"]
    assert edited["code"]["adapter"] != first["code"]["adapter"]
    assert f"(source sha256 {source_digest(adapter)})" in edited["code"]["adapter"]


def test_a_local_file_is_checked_before_it_is_imported(cli, tmp_path):
    result = cli("eval", "--method", f"{tmp_path / 'missing.py'}:Mine", "--protocol", "demo-1shot")
    assert result.code == 2 and "missing.py does not exist" in " ".join(result.stderr.split())
    result = cli("eval", "--method", f"{EXAMPLE}:{CLASS}", "--protocol", "demo-1shot", "--option", "space=lab")
    assert result.code == 2 and "expected one of rgb, chroma" in result.stderr


def test_the_guide_documents_every_episode_batch_field_and_the_entry_point():
    from fssbench.harness.contract import EpisodeBatch

    guide = (DOCS / "adapters.md").read_text()
    for field in dataclasses.fields(EpisodeBatch):
        assert f"`{field.name}`" in guide, field.name
    assert '[project.entry-points."fssbench.adapters"]' in guide
    assert "docs/examples/colour_prototype.py" in guide


@pytest.mark.parametrize("space", ["rgb", "chroma"])
def test_the_example_predicts_probabilities_of_the_evaluation_size(space):
    import importlib.util

    import torch

    from fssbench.harness.contract import EpisodeBatch

    spec = importlib.util.spec_from_file_location("colour_prototype_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    adapter = getattr(module, CLASS)({"space": space})
    red, blue = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
    support = blue[:, None, None].expand(3, 8, 8).clone()
    support[:, :4] = red[:, None, None]  # top half red: the foreground
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    query = blue[:, None, None].expand(3, 8, 8).clone()
    query[:, :, :4] = red[:, None, None]  # left half red
    batch = EpisodeBatch(episodes=[], query_images=query[None], support_images=support[None, None],
                         support_masks=mask[None, None], support_labelled=torch.ones(1, 1, 8, 8),
                         support_annotation="mask", class_names=["red"])
    prediction = adapter.predict(batch)
    assert prediction.shape == (1, 8, 8)
    torch.testing.assert_close(prediction[0] > 0.5, query[0] > 0.5, rtol=0, atol=0)  # exactly the red pixels are foreground
