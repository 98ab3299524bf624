"""FSS-1000: 1000 classes of 10 images each, read as HSNet reads them (PROTOCOLS.md sections 1-2).

Class names come from HSNet's split lists `splits/fss/{trn,val,test}.txt` (Matcher keeps the same
files in `FSS-1000/splits/`). HSNet sorts each list by name and numbers it from a fixed offset: train
ids 0..519, val 520..759, test 760..999; the benchmark is the test split, one fold (0). Images are
`<class>/<k>.jpg` with grey masks `<k>.png` (>= 128 is foreground, no ignore) in `FSS-1000/` (HSNet) or
`FSS-1000/data/` (Matcher). Image ids are `<class>/<k>.jpg`, HSNet's paths relative to that folder.
Building the query list needs no directory listing: every class holds images 1..10.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path, PurePosixPath

from fssbench.harness.datasets import GreyMaskReader
from fssbench.harness.errors import DataError
from fssbench.protocols.hsnet import FSS_IMAGE_NUMBERS, numbered_image, read_list_lines

SPLIT_IDS = {"trn": range(0, 520), "val": range(520, 760), "test": range(760, 1000)}  # HSNet's build_class_ids


class Fss1000Dataset(GreyMaskReader):
    """Masks as GreyMaskReader reads them: the published peregine_falcon/8.png is an RGB mask of another
    size than its photo (FSS-1000 issue #23), which HSNet's grey read and separate resizing absorb."""

    name = "fss1000"
    layout = ("  <data root>/\n"
              "    FSS-1000/<class>/<k>.jpg and <k>.png, k = 1..10   (Matcher's FSS-1000/data/<class>/ also works)\n"
              "    splits/fss/{trn,val,test}.txt   (HSNet's data/splits/fss; Matcher's FSS-1000/splits/ also works)")

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        matcher_images = self.root / "FSS-1000" / "data"
        self.image_folder = "FSS-1000/data" if matcher_images.is_dir() else "FSS-1000"
        hsnet_splits = self.root / "splits" / "fss"
        matcher_splits = self.root / "FSS-1000" / "splits"
        self.split_folder = matcher_splits if matcher_splits.is_dir() and not hsnet_splits.is_dir() else hsnet_splits

    @cached_property
    def class_names(self) -> list[str]:
        return [name for split in SPLIT_IDS for name in self.split_classes(split)]

    def split_classes(self, split: str) -> list[str]:
        """HSNet's `sorted(f.read().split('\\n')[:-1])`: a split's class names in id order."""
        if split not in SPLIT_IDS:
            raise DataError(f"dataset {self.name!r} has splits {', '.join(SPLIT_IDS)}, not {split!r}")
        path = self.split_folder / f"{split}.txt"
        names = sorted(read_list_lines(path))
        malformed = [name for name in names if not name or "/" in name]
        if malformed:
            raise DataError(f"{path}: {malformed[0]!r} is not a class folder name")
        expected = len(SPLIT_IDS[split])
        if len(names) != expected or len(set(names)) != len(names):
            raise DataError(f"{path} lists {len(set(names))} distinct classes in {len(names)} lines; "
                            f"FSS-1000's {split} split has {expected} distinct classes")
        return names

    def fold_classes(self, fold: int) -> list[int]:
        """The test classes: FSS-1000 has one fold."""
        return list(SPLIT_IDS["test"])

    def split_files(self, fold: int) -> list[Path]:
        return [self.split_folder / "test.txt"]

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """HSNet's query order: classes sorted by name, each class's images in sorted-path order
        (1, 10, 2, ..., 9), ids numbered from the split's offset."""
        names = self.split_classes(split)
        return [(image, SPLIT_IDS[split][index])
                for index, name in enumerate(names)
                for image in sorted(numbered_image(name, number) for number in FSS_IMAGE_NUMBERS)]

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"{self.image_folder}/{image_id}", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        mask = PurePosixPath(image_id).with_suffix(".png")
        return self.inside_root(f"{self.image_folder}/{mask}", f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"images": self.image_folder}
