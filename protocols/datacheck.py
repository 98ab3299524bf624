"""`fssbench data check`: is a dataset on disk complete, readable and as large as its reference says?

A check reads the dataset's split lists for every fold its protocols use, compares what it counts
with the counts the reference implementations give (PASCAL-5i val lists 346/451/725/346 lines,
COCO-20i 26052/15305/13138/12640 val images per fold, FSS-1000 240 test classes of 10 images, ISIC
1867/519/208 images per class, iSAID-5i val lists 3108/3657/3298 lines), then opens and fully decodes
every image and label file those lists name. Datasets whose references give no count (Deepglobe,
whose published tiles differ from the paper's 5666; Chest X-ray; LVIS-92i; the demo) are counted and
shown without one. Every shortfall is a problem in the report; an empty list means the data is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from fssbench import registry
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import DataError, UsageError

FileProgress = Callable[[int, int], None]  # on_file(done, total)
PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class Count:
    what: str
    found: int
    expected: int | None = None

    @property
    def matches(self) -> bool:
        return self.expected is None or self.found == self.expected

    def describe(self) -> str:
        expected = "" if self.expected is None else f" (expected {self.expected})"
        return f"{self.what}: {self.found}{expected}"


@dataclass
class DataCheckReport:
    dataset: str
    root: Path | None
    counts: list[Count] = field(default_factory=list)
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"dataset {self.dataset!r} at {self.root if self.root is not None else '(default location)'}"]
        lines += [f"  {count.describe()}{'' if count.matches else '   <- differs'}" for count in self.counts]
        lines.append(f"  {self.files_checked} image and label files checked (opened and fully decoded)")
        if self.ok:
            lines.append("OK: no problems found")
            return "\n".join(lines)
        lines.append(f"{len(self.problems)} problem(s):")
        lines += [f"  - {problem}" for problem in self.problems[:PROBLEMS_SHOWN]]
        if len(self.problems) > PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(self.problems) - PROBLEMS_SHOWN} more")
        return "\n".join(lines)


# What to count for each dataset --------------------------------------------------------------------

def entries_per_fold(reader: DatasetReader, split: str, folds: Sequence[int],
                     expected: Sequence[int] | None = None) -> list[Count]:
    return [Count(f"fold {fold} list entries", len(reader.split_list(split, fold)),
                  expected[fold] if expected else None) for fold in folds]


def images_per_fold(reader: DatasetReader, split: str, folds: Sequence[int],
                    expected: Sequence[int] | None = None) -> list[Count]:
    return [Count(f"fold {fold} distinct images", len({image for image, _ in reader.split_list(split, fold)}),
                  expected[fold] if expected else None) for fold in folds]


def images_per_class(reader: DatasetReader, split: str, folds: Sequence[int],
                     expected: dict[str, int] | None = None) -> list[Count]:
    names = reader.class_names
    found: dict[int, int] = {}
    for fold in folds:
        for _, class_id in reader.split_list(split, fold):
            found[class_id] = found.get(class_id, 0) + 1
    return [Count(f"{names[class_id]} images", found.get(class_id, 0), (expected or {}).get(names[class_id]))
            for fold in folds for class_id in reader.fold_classes(fold)]


def fss1000_counts(reader: DatasetReader, split: str, folds: Sequence[int]) -> list[Count]:
    return [Count("test classes", len(reader.fold_classes(folds[0])), 240),
            Count("test images", len(reader.split_list(split, folds[0])), 2400)]


def lvis_counts(reader: DatasetReader, split: str, folds: Sequence[int]) -> list[Count]:
    return [count for fold in folds for count in (
        Count(f"fold {fold} classes", len(reader.fold_classes(fold))),
        Count(f"fold {fold} (image, class) pairs", len(reader.split_list(split, fold))))]


Census = Callable[[DatasetReader, str, Sequence[int]], list[Count]]


@dataclass(frozen=True)
class DatasetCheck:
    split: str
    folds: tuple[int, ...]
    census: Census

    def counts(self, reader: DatasetReader) -> list[Count]:
        return self.census(reader, self.split, self.folds)


CHECKS: dict[str, DatasetCheck] = {
    "demo": DatasetCheck("val", (0, 1, 2, 3), entries_per_fold),
    "pascal": DatasetCheck("val", (0, 1, 2, 3), partial(entries_per_fold, expected=(346, 451, 725, 346))),
    "coco": DatasetCheck("val", (0, 1, 2, 3), partial(images_per_fold, expected=(26052, 15305, 13138, 12640))),
    "coco-contiguous": DatasetCheck("val", (0, 1, 2, 3), images_per_fold),
    "fss1000": DatasetCheck("test", (0,), fss1000_counts),
    "deepglobe": DatasetCheck("test", (0,), images_per_class),
    "isic": DatasetCheck("test", (0,), partial(images_per_class, expected={
        "nevus": 1867, "melanoma": 519, "seborrheic_keratosis": 208})),
    "chestxray": DatasetCheck("test", (0,), images_per_class),
    "lvis92i-1shot": DatasetCheck("val", tuple(range(10)), lvis_counts),
    "lvis92i-5shot": DatasetCheck("val", tuple(range(10)), lvis_counts),
    "isaid": DatasetCheck("val", (0, 1, 2), partial(entries_per_fold, expected=(3108, 3657, 3298))),
}


# The check ---------------------------------------------------------------------------------------

def check_dataset(name: str, data_root: Path | None, on_file: FileProgress | None = None) -> DataCheckReport:
    """Count and open everything the protocols on dataset `name` read; `on_file(done, total)` after each file."""
    if name not in CHECKS:
        registry.datasets.entry(name)  # an unknown name fails here, with a did-you-mean
        raise UsageError(f"no data check is defined for dataset {name!r}; checks exist for {', '.join(sorted(CHECKS))}")
    check = CHECKS[name]
    report = DataCheckReport(name, data_root)
    try:
        reader = registry.datasets.get(name).open(data_root)
        report.root = reader.root
        report.counts = check.counts(reader)
        image_ids = list(dict.fromkeys(image for fold in check.folds
                                       for image, _ in reader.split_list(check.split, fold)))
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    report.problems += [f"{count.what}: found {count.found}, expected {count.expected}"
                        for count in report.counts if not count.matches]
    check_files(reader, image_ids, report, on_file or (lambda done, total: None))
    return report


def check_files(reader: DatasetReader, image_ids: list[str], report: DataCheckReport, on_file: FileProgress) -> None:
    """Open and fully decode each id's image and label file once; record what is missing or broken."""
    total = 2 * len(image_ids)
    seen: set[Path] = set()
    done = 0
    for image_id in image_ids:
        for locate in (reader.image_path, reader.label_path):
            problem = _check_once(locate, image_id, seen, report)
            if problem:
                report.problems.append(problem)
            done += 1
            on_file(done, total)


def _check_once(locate: Callable[[str], Path], image_id: str, seen: set[Path], report: DataCheckReport) -> str | None:
    try:
        path = locate(image_id)
    except DataError as exc:
        return str(exc)
    if path in seen:
        return None
    seen.add(path)
    report.files_checked += 1
    return unreadable(path)


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be decoded in full, or None when it can."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{path} is unreadable or truncated ({exc}); re-extract or re-download it"
    return None
