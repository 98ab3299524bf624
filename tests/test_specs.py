"""Protocol specs: inheritance, validation errors that name file and key, stable hashes."""

import subprocess
import sys
from pathlib import Path

import pytest

from fssbench import registry
from fssbench.harness.errors import UsageError
from fssbench.harness.specs import load_spec
from fssbench.registry import ProtocolRegistry, check_sampler_params

BASE = """\
version: 1
task: fss
dataset: demo
folds: [0, 1]
sampler: {name: hsnet-list, episodes: 10, seed: 0}
resolution: {mode: squash, size: 400}
support: mask
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def child(name: str, extra: str = "") -> str:
    return f"include: _base.yaml\nname: {name}\ndescription: test protocol\nshot: 1\n{extra}"


def test_include_merges_nested_keys_and_the_child_wins(tmp_path):
    write(tmp_path, "_base", BASE)
    spec = load_spec(write(tmp_path, "p", child("p", "sampler: {episodes: 99}\n")))
    assert spec.sampler == {"name": "hsnet-list", "episodes": 99, "seed": 0}
    assert spec.folds == (0, 1) and spec.resolution.size == 400 and spec.shot == 1


def test_hash_is_stable_ignores_the_description_and_changes_with_any_rule(tmp_path):
    write(tmp_path, "_base", BASE)
    first = load_spec(write(tmp_path, "p", child("p")))
    assert load_spec(tmp_path / "p.yaml").sha256 == first.sha256
    write(tmp_path, "p", child("p").replace("test protocol", "reworded"))
    assert load_spec(tmp_path / "p.yaml").sha256 == first.sha256
    write(tmp_path, "p", child("p", "resolution: {size: 512}\n"))
    assert load_spec(tmp_path / "p.yaml").sha256 != first.sha256


@pytest.mark.parametrize("extra, key", [
    ("shot: 0\n", "shot"),
    ("colour: red\n", "colour"),
    ("sampler: {episodes: many}\n", "sampler.episodes"),
    ("resolution: {mode: letterbox}\n", "resolution.mode"),
    ("support: crayon\n", "support"),
    ("folds: []\n", "folds"),
])
def test_invalid_values_name_the_file_and_the_key(tmp_path, extra, key):
    write(tmp_path, "_base", BASE)
    path = write(tmp_path, "p", child("p") + extra)
    with pytest.raises(UsageError) as error:
        load_spec(path)
    assert str(path) in str(error.value) and f"'{key}'" in str(error.value)


def test_missing_key_name_mismatch_cycle_and_bad_yaml(tmp_path):
    write(tmp_path, "_base", BASE)
    with pytest.raises(UsageError, match="key 'shot' is missing"):
        load_spec(write(tmp_path, "a", child("a").replace("shot: 1\n", "")))
    with pytest.raises(UsageError, match="must equal the file name"):
        load_spec(write(tmp_path, "b", child("other")))
    write(tmp_path, "_x", "include: _y.yaml\n")
    write(tmp_path, "_y", "include: _x.yaml\n")
    with pytest.raises(UsageError, match="cycle"):
        load_spec(write(tmp_path, "c", "include: _x.yaml\n"))
    with pytest.raises(UsageError, match="not valid YAML"):
        load_spec(write(tmp_path, "d", "name: [unclosed\n"))
    with pytest.raises(UsageError, match="does not exist"):
        load_spec(write(tmp_path, "e", "include: _missing.yaml\n"))


def test_yaml_tags_that_would_construct_objects_are_refused(tmp_path):
    with pytest.raises(UsageError, match="not valid YAML"):
        load_spec(write(tmp_path, "p", "name: !!python/object/apply:os.system ['true']\n"))


def test_builtin_protocols_load_with_their_sampler_parameters_checked():
    for name in registry.protocols.names():
        spec = registry.protocols.get(name)
        assert spec.name == name and len(spec.sha256) == 64
        assert registry.protocols.spec(name) == spec


@pytest.mark.parametrize("sampler, key, words", [
    ("{shuffel: true}", "sampler.shuffel", ["is not a parameter of sampler 'hsnet-list'", "episodes, split"]),
    ("{name: hsnet-lst}", "sampler.name", ["Did you mean 'hsnet-list'", "Known samplers: diam"]),
    ("{name: pfenet}", "sampler.workers", ["is missing", "sampler 'pfenet'"]),
    ("{shot: 5}", "sampler.shot", ["the harness passes it"]),
])
def test_sampler_parameter_typos_fail_at_load_naming_the_file_and_the_key(tmp_path, sampler, key, words):
    write(tmp_path, "_base", BASE)
    path = write(tmp_path, "p", child("p", f"sampler: {sampler}\n"))
    protocols = ProtocolRegistry([tmp_path], entry_point_group="fssbench.no-plugins-here")
    with pytest.raises(UsageError) as error:
        protocols.get("p")
    message = str(error.value)
    assert message.startswith(f"protocol spec {path}: key '{key}' ") and all(w in message for w in words), message


def test_a_sampler_taking_any_keyword_accepts_any_sampler_key(tmp_path):
    def open_sampler(reader, fold, shot, seed, **options):
        return []

    def strict_sampler(reader, fold, shot, seed, episodes):
        return []

    write(tmp_path, "_base", BASE)
    spec = load_spec(write(tmp_path, "p", child("p", "sampler: {shuffel: true}\n")))
    check_sampler_params(spec, open_sampler)
    with pytest.raises(UsageError, match="key 'sampler.shuffel' is not a parameter of sampler 'hsnet-list'"):
        check_sampler_params(spec, strict_sampler)


@pytest.mark.slow
def test_listing_protocol_specs_imports_no_sampler_module():
    code = ("import sys\nfrom fssbench import registry\n"
            "for name in registry.protocols.names():\n    registry.protocols.spec(name).description\n"
            "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('fssbench.protocols.')]\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
