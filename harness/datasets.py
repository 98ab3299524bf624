"""The dataset reader contract: split lists, images and label maps of one benchmark dataset.

Readers live in fssbench.protocols; the harness only talks to this interface. A label map keeps the
dataset's own encoding (so it can be resized with nearest-neighbour once and cached); `foreground`
and `ignore` turn it into the binary mask of one class and the pixels excluded from scoring.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from fssbench.harness.errors import DataError, UsageError

if TYPE_CHECKING:  # commands that only read split lists (fssbench episodes) import no numpy, torch or PIL
    import numpy as np
    import torch
    from PIL import Image

IGNORE_LABEL = 255  # label value of ignored pixels, in label maps and in GFSS label indices


def data_root_from(flag: Path | None) -> Path | None:
    """`--data-root`, else $FSSBENCH_DATA, else None (readers that can, like the demo's, find their own)."""
    if flag is not None:
        return flag
    env = os.environ.get("FSSBENCH_DATA")
    return Path(env).expanduser() if env else None


class DatasetReader(ABC):
    name: ClassVar[str]
    layout: ClassVar[str]  # the expected folder layout, shown when the data root is wrong
    # False where the published data has label maps of another size than their image; both are then
    # resized to the evaluation size separately, as HSNet does
    labels_match_images: ClassVar[bool] = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(
                f"data root {self.root} for dataset {self.name!r} does not exist. "
                f"Expected layout:\n{self.layout}\n"
                "Pass --data-root DIR or set FSSBENCH_DATA to the folder that holds it."
            )

    @classmethod
    def open(cls, data_root: Path | None) -> "DatasetReader":
        if data_root is None:
            raise DataError(
                f"dataset {cls.name!r} needs a data root: pass --data-root DIR or set FSSBENCH_DATA. "
                f"Expected layout:\n{cls.layout}"
            )
        return cls(data_root)

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Class names indexed by the dataset's 0-based class id."""

    @abstractmethod
    def fold_classes(self, fold: int) -> list[int]:
        """0-based class ids evaluated in `fold`, in the dataset's order."""

    def image_list_files(self) -> list[Path]:
        """The whole-image val list `lists/<dataset>/val.txt` (PFENet's lists, used by PFENet and DIaM)."""
        raise UsageError(f"dataset {self.name!r} has no whole-image val list (PFENet's and DIaM's lists/<dataset>/"
                         "val.txt), which PFENet's and generalized FSS protocols need")

    def image_list(self) -> list[str]:
        """Image ids of the whole-image val list, in file order."""
        raise UsageError(f"dataset {self.name!r} has no whole-image val list (PFENet's and DIaM's lists/<dataset>/"
                         "val.txt), which PFENet's and generalized FSS protocols need")

    @abstractmethod
    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """(image id, 0-based class id) pairs of a split list, in file order."""

    @abstractmethod
    def split_files(self, fold: int) -> list[Path]:
        """The files a manifest for `fold` is built from (their contents key the manifest cache)."""

    @abstractmethod
    def image_path(self, image_id: str) -> Path: ...

    @abstractmethod
    def label_path(self, image_id: str) -> Path: ...

    def instance_path(self, image_id: str) -> Path | None:
        """The instance map of an image (0 = no instance), for box supports; None if the dataset has none."""
        return None

    def decode_label(self, label: Image.Image) -> np.ndarray:
        """The label map of a decoded label file, one channel in the dataset's encoding."""
        import numpy as np

        return np.asarray(label)

    def foreground(self, label: torch.Tensor, class_id: int) -> torch.Tensor:
        return label == class_id + 1

    def ignore(self, label: torch.Tensor) -> torch.Tensor | None:
        ignored = label == IGNORE_LABEL
        return ignored if ignored.any() else None

    def fingerprint(self) -> dict[str, str]:
        """Facts that identify the data a result was computed on (mask source, content hash, ...)."""
        return {}

    def inside_root(self, relative: str, what: str) -> Path:
        """`root / relative`, refusing absolute paths and `..` that would leave the data root."""
        normalized = os.path.normpath(relative)
        if os.path.isabs(normalized) or normalized == ".." or normalized.startswith(".." + os.sep):
            raise DataError(f"{what} names {relative!r}, a path outside the data root {self.root}; refusing it")
        return self.root / normalized


class GreyMaskReader(DatasetReader):
    """Masks as many FSS datasets ship them (FSS-1000 and PATNet's cross-domain sets): any image read
    as grey, foreground where >= 128, nothing ignored, resized apart from its image (as HSNet and PATNet
    do, which some published masks of another size than their image need)."""

    labels_match_images = False

    def decode_label(self, label: Image.Image) -> np.ndarray:
        import numpy as np

        return np.asarray(label.convert("L"))

    def foreground(self, label: torch.Tensor, class_id: int) -> torch.Tensor:
        return label >= 128

    def ignore(self, label: torch.Tensor) -> torch.Tensor | None:
        return None


def sha256_of_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise DataError(f"cannot read split list {path}: {exc.strerror}") from None
        digest.update(b"\0")
    return digest.hexdigest()
