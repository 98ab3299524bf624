"""A newcomer's first hour: everything a run lacks in one message, before torch; extras named when a
library is missing; static declarations equal to the classes'; progress for the whole run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fssbench import registry
from fssbench.cli.declarations import DECLARED, adapter_declarations
from fssbench.harness.errors import UsageError


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_every_missing_requirement_of_a_run_comes_in_one_message(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if fssbench[diffews] were not installed
    result = cli("eval", "--method", "diffews", "--protocol", "coco20i-1shot", "--out", str(tmp_path))
    message = one_line(result.stderr)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "4 things to fix" in message
    assert "needs weights 'sd21'" in message and "needs weights 'unet'" in message
    assert "https://www.modelscope.cn/zzzmmz/Diffews.git" in message  # the WeightSpecs' source
    assert "DiffewS needs diffusers, which is not installed: pip install 'fssbench[diffews]'" in message
    assert "dataset 'coco' needs a data root" in message and "splits/coco/val/fold<i>.pkl" in message
    assert "https://cocodataset.org/#download" in message
    assert "https://github.com/juhongm999/hsnet/tree/main/data/splits" in message


def test_flag_mistakes_are_listed_together(cli, tmp_path):
    result = cli("eval", "-m", "protonet", "-p", "demo-1shot", "--fold", "9", "--option", "nosuch=1",
                 "--backbone", "resnet9", "--device", "gpu", "--weights", "x", "--out", str(tmp_path))
    message = one_line(result.stderr)
    assert result.code == 2 and "5 things to fix" in message
    for needle in ("--device 'gpu'", "--weights 'x': expected NAME=PATH", "has no option 'nosuch'",
                   "does not run on backbone 'resnet9'", "--fold '9'"):
        assert needle in message


def test_a_single_problem_keeps_its_own_message_and_exit_code(cli, tmp_path):
    result = cli("eval", "-m", "oracle", "-p", "pascal5i-1shot", "--data-root", str(tmp_path / "nowhere"))
    assert result.code == 1 and "does not exist" in result.stderr and "things to fix" not in result.stderr
    assert "host.robots.ox.ac.uk" in one_line(result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--method", "nosuch", "--protocol", "demo-1shot"],
                                  ["--method", "diffews", "--protocol", "coco20i-1shot"]])
def test_usage_errors_come_before_torch_is_imported(args):
    code = ("import sys\nfrom fssbench.cli import main\nsys.argv = ['fssbench', 'eval', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    print(exit.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["2", "False"], done.stderr


@pytest.mark.parametrize("method", ["oracle", "protonet", "precomputed", "affinity-sam", "diffews", "diffup"])
def test_declarations_read_from_the_source_equal_the_classes(method):
    declared = adapter_declarations(registry.methods.entry(method).target)
    assert declared is not None, f"{method}'s declarations are no longer literal: planning imports it"
    adapter = registry.methods.get(method)
    for name in DECLARED:
        expected = getattr(adapter, name)
        if name == "weights":
            expected = tuple((w.name, w.expected, w.source, w.required) for w in expected)
            assert tuple((w.name, w.expected, w.source, w.required) for w in declared.weights) == expected
        else:
            assert getattr(declared, name) == expected, name
    assert declared.tasks == adapter.tasks


def test_computed_declarations_fall_back_to_the_class():
    assert adapter_declarations(registry.methods.entry("gsm+protonet").target) is None


def test_a_missing_library_names_its_extra(monkeypatch):
    from fssbench.adapters.diffews import build_networks, TINY_UNET_CONFIG, TINY_VAE_CONFIG
    from fssbench.protocols.coco_prepare import prepare_coco_masks
    from fssbench.protocols.lvis import coco_mask_api

    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(UsageError, match=r"DiffewS needs diffusers, which is not installed: pip install 'fssbench\[diffews\]'"):
        build_networks(TINY_UNET_CONFIG, TINY_VAE_CONFIG)
    with pytest.raises(UsageError, match=r"LVIS-92i \(its masks\) needs pycocotools.*fssbench\[coco\]"):
        coco_mask_api()
    with pytest.raises(UsageError, match=r"fssbench\[coco\]"):
        prepare_coco_masks(__import__("pathlib").Path("/nonexistent"))


def test_extras_in_pyproject_cover_what_the_code_requires():
    import tomllib
    from pathlib import Path

    import fssbench
    from fssbench.harness.extras import DISTRIBUTIONS

    project = tomllib.loads((Path(fssbench.__file__).parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for heavy in ("diffusers", "transformers", "segment-anything", "pycocotools", "ray", "submitit"):
        assert heavy not in core
    assert set(extras["all"][0].partition("[")[2].rstrip("]").split(",")) == set(extras) - {"all", "dev"}
    requirements = " ".join(" ".join(v) for v in extras.values())
    for distribution in DISTRIBUTIONS.values():
        assert distribution in requirements


def test_progress_names_the_fold_of_the_run_and_the_run_eta(capsys):
    from fssbench.harness.progress import RunProgress

    progress = RunProgress("m p")
    progress.plan({0: 10, 1: 10, 2: 10})
    on_unit = progress(1, 10, 0)
    for done in range(1, 11):
        on_unit(done, 50.0)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("m p fold 1 (2 of 3): 1/10 episodes")
    assert "run ETA" in lines[0] and lines[-1].endswith("ETA 0 s, run ETA 0 s, mIoU 50.0")
    # the run's ETA counts the folds after this one: 9 + 10 units left at the same rate
    fold_eta, run_eta = (float(part.split()[-2]) for part in lines[0].split(", ")[2:4])
    assert run_eta == pytest.approx(fold_eta * 19 / 9, abs=1.0)


def test_every_package_of_the_tree_is_in_pyproject():
    import tomllib
    from pathlib import Path

    import fssbench

    root = Path(fssbench.__file__).parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tops = [folder for folder in root.iterdir() if (folder / "__init__.py").is_file() and folder.name != "tests"]
    found = {"fssbench"} | {".".join(("fssbench", *init.parent.relative_to(root).parts))
                            for top in tops for init in top.rglob("__init__.py")}
    assert found == listed
