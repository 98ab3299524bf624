"""Everything an `fssbench eval` command line lacks, found before torch is imported and reported at once.

`preflight` checks the names (method, protocol), the flags (fold, device, weights, options, backbone), the
method's weights (every required one that is not given), its optional libraries (the extras its module
`require`s) and the dataset's root, from declarations read statically (cli/declarations.py); a method
whose declarations are computed is imported for them. One problem is raised as itself; several become one
numbered message, each item saying where to get what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

from fssbench import registry
from fssbench.cli.declarations import NotStatic, StaticModule, adapter_declarations, class_attribute, defines
from fssbench.harness.errors import DataError, FssbenchError, UsageError
from fssbench.harness.extras import DISTRIBUTIONS
from fssbench.harness.options import resolve_backbone, resolve_options
from fssbench.harness.weights import parse_weight_flags, weight_problems

HSNET_SPLITS = "HSNet's split lists: https://github.com/juhongm999/hsnet/tree/main/data/splits"
COCO_DOWNLOAD = "https://cocodataset.org/#download"
# where each built-in dataset comes from (the readers' layouts name the split lists' origin too)
DATASET_SOURCES = {
    "pascal": "VOC2012 images from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, SegmentationClassAug (SBD-"
              f"augmented masks) as linked in HSNet's README (https://github.com/juhongm999/hsnet); {HSNET_SPLITS}",
    "coco": f"COCO 2014 images and instances JSON from {COCO_DOWNLOAD} (masks: HSNet's PNGs, or `fssbench data "
            f"prepare coco`); {HSNET_SPLITS}",
    "fss1000": f"FSS-1000 from https://github.com/HKUSTCV/FSS-1000; {HSNET_SPLITS}",
    "deepglobe": "Deepglobe land cover from https://competitions.codalab.org/competitions/18468, tiled by PATNet's "
                 "data/preprocess.py (https://github.com/slei109/PATNet)",
    "isic": "ISIC 2018 task 1 training data from https://challenge.isic-archive.com/data/#2018; class_id.csv from "
            "PATNet's data/isic (https://github.com/slei109/PATNet)",
    "chestxray": "Kaggle's https://www.kaggle.com/datasets/nikhilpandey360/chest-xray-masks-and-labels (its Lung "
                 "Segmentation folder)",
    "lvis92i": f"COCO 2017 images from {COCO_DOWNLOAD}; Matcher's LVIS-92i annotations (lvis.zip, "
               "https://github.com/aim-uofa/Matcher)",
    "isaid": "iSAID from https://captain-whu.github.io/iSAID/, patched as GF-SAM does; GF-SAM's split lists "
             "(https://github.com/ANDYZAQ/GF-SAM)",
}
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def preflight(request: Any) -> None:
    """Raise one error listing everything `request` (an EvalRequest) lacks that can be known without
    torch; return when nothing is missing."""
    usage: list[str] = []
    data: list[str] = []

    def check(problems: list[str], step) -> Any:
        try:
            return step()
        except UsageError as exc:
            problems.append(str(exc))
        except DataError as exc:
            data.append(str(exc))
        return None

    spec = check(usage, lambda: registry.protocols.spec(request.protocol))
    adapter = check(usage, lambda: method_declarations(request.method))
    if not DEVICE_NAME.fullmatch(request.device):
        usage.append(f"--device {request.device!r}: expected auto, cpu, cuda or cuda:N")
    weights = check(usage, lambda: parse_weight_flags(request.weights))
    if adapter is not None:
        check(usage, lambda: resolve_options(request.method, adapter, request.options))
        check(usage, lambda: resolve_backbone(request.method, adapter, request.backbone))
        if weights is not None:
            usage += weight_problems(request.method, adapter, weights, request.random_init)
        usage += missing_extras(getattr(adapter, "extras", {}))
    if spec is not None:
        check(usage, lambda: spec.select_folds(request.fold))
        if adapter is not None:
            usage += task_problems(request.method, adapter, spec)
        usage += missing_extras(reader_extras(spec.dataset))
        data += dataset_problems(spec.dataset, request.data_root)
    problems = usage + data
    if len(problems) == 1:
        raise (UsageError if usage else DataError)(problems[0])
    if problems:
        items = "\n".join(f"{number}. {problem}" for number, problem in enumerate(problems, 1))
        raise (UsageError if usage else DataError)(f"this run cannot start; {len(problems)} things to fix:\n{items}")


def method_declarations(method: str):
    """The method's declarations, read from its source, or its class when they are computed."""
    entry = registry.methods.entry(method)
    declared = None if entry.base else adapter_declarations(entry.target)
    return declared if declared is not None else registry.methods.get(method)


def task_problems(method: str, adapter, spec) -> list[str]:
    """What the protocol asks that the method cannot do (the task strategies check the same on the class)."""
    if spec.task not in adapter.tasks:
        return [f"method {method!r} does not do task {spec.task!r} of protocol {spec.name!r} "
                f"(it does: {', '.join(sorted(adapter.tasks)) or 'none'})"]
    if spec.support not in adapter.support_annotations:
        return [f"method {method!r} does not accept {spec.support!r} support annotations of protocol {spec.name!r} "
                f"(it accepts: {', '.join(sorted(adapter.support_annotations))})"]
    return []


def missing_extras(required: dict[str, tuple[str, str]]) -> list[str]:
    """One line per extra whose libraries are not installed, found without importing them."""
    by_extra: dict[tuple[str, str], list[str]] = {}
    for module, (purpose, extra) in required.items():
        top = module.partition(".")[0]
        if not installed(top):
            by_extra.setdefault((purpose, extra), []).append(DISTRIBUTIONS.get(top, top))
    return [f"{purpose} needs {', '.join(names)}, which {'is' if len(names) == 1 else 'are'} not installed: "
            f"pip install 'fssbench[{extra}]' (or 'fssbench[all]')" for (purpose, extra), names in by_extra.items()]


def installed(module: str) -> bool:
    """Whether a top-level module can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec: None there blocks its import
        return sys.modules.get(module) is not None


def reader_extras(dataset: str) -> dict[str, tuple[str, str]]:
    try:
        target = registry.datasets.entry(dataset).target
    except UsageError:
        return {}
    source = StaticModule.of(target.partition(":")[0])
    return source.required_extras() if source is not None else {}


def dataset_problems(dataset: str, data_root: Path | None) -> list[str]:
    """A data root that is not given (for a dataset that cannot find its own) or does not exist."""
    try:
        target = registry.datasets.entry(dataset).target
    except FssbenchError as exc:
        return [str(exc)]
    root = data_root or (Path(os.environ["FSSBENCH_DATA"]).expanduser() if os.environ.get("FSSBENCH_DATA") else None)
    if root is None and defines(target, "open"):  # the reader finds its own data (the demo: in the cache)
        return []
    if root is not None and Path(root).is_dir():
        return []  # what is inside is checked when the reader opens it
    try:
        layout = f" Expected layout:\n{class_attribute(target, 'layout')}"
    except NotStatic:
        layout = ""
    source = DATASET_SOURCES.get(dataset.partition("-")[0])
    where = f"\nGet it: {source}." if source else ""
    if root is None:
        return [f"dataset {dataset!r} needs a data root: pass --data-root DIR, set FSSBENCH_DATA or data_root in "
                f"fssbench.toml.{layout}{where}"]
    return [f"data root {root} for dataset {dataset!r} does not exist.{layout}{where}\n"
            "Pass --data-root DIR or set FSSBENCH_DATA to the folder that holds it."]
