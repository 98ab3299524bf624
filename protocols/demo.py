"""The built-in demo dataset: real photographs turned into a small, exact FSS benchmark.

Each of the 16 classes is the texture of one photograph that ships inside scikit-image (brick,
grass, a cat's fur, the Hubble deep field, ...). An image pastes one or two objects of those
textures, cut out by random smooth shapes or the silhouette of scikit-image's horse, onto a
background cropped from other bundled photographs (text, a page, a colour wheel, ...). Masks are
exact because the objects are pasted. Everything is drawn from one seeded numpy generator, written
once (atomically) and cached: 20 val and 8 train images per class, about a third holding a second
class. Folds follow PASCAL-5i's pattern: fold i = classes 4i..4i+3; split lists use PASCAL's
`<image id>__<1-based class, 2 digits>` lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fssbench.harness.cache import cache_dir
from fssbench.protocols.pascal import PairListDataset

VERSION = 1
SEED = 20240611
FOLDS = 4
CLASSES = ("brick", "grass", "gravel", "coffee",
           "chelsea", "astronaut", "moon", "coins",
           "retina", "hubble_deep_field", "immunohistochemistry", "rocket",
           "cell", "camera", "motorcycle", "clock")
BACKGROUNDS = ("page", "text", "colorwheel", "logo", "microaneurysms", "checkerboard")
IMAGES_PER_CLASS = {"val": 20, "trn": 8}
SECOND_CLASS_PROBABILITY = 0.35


def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as HxWx3 uint8 (no download: these ship in the wheel)."""
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:  # logo: composite over white
        alpha = image[:, :, 3:4] / 255.0
        image = (image[:, :, :3] * alpha + 255 * (1 - alpha)).round()
    return np.ascontiguousarray(image.astype(np.uint8))


def _horse() -> np.ndarray:
    import skimage.data

    return ~skimage.data.horse()


def _resize(array: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    image = Image.fromarray(array)
    return np.asarray(image.resize((width, height), Image.NEAREST if nearest else Image.BILINEAR))


def _crop(rng: np.random.RandomState, photo: np.ndarray, width: int, height: int, scale: tuple[float, float]) -> np.ndarray:
    """A random crop of `photo` (a fraction `scale` of its short side), resized to width x height."""
    side = min(photo.shape[:2])
    crop = int(side * rng.uniform(*scale))
    top = rng.randint(0, photo.shape[0] - crop + 1)
    left = rng.randint(0, photo.shape[1] - crop + 1)
    patch = photo[top:top + crop, left:left + crop]
    if rng.rand() < 0.5:
        patch = patch[:, ::-1]
    return _resize(np.ascontiguousarray(patch), width, height)


def _shape(rng: np.random.RandomState, horse: np.ndarray, size: int) -> np.ndarray:
    """A boolean size x size object shape: a smooth star-convex blob, or the horse silhouette."""
    if rng.rand() < 0.3:
        shape = _resize(horse.astype(np.uint8) * 255, size, size, nearest=True) > 127
        return shape[:, ::-1] if rng.rand() < 0.5 else shape
    angles = np.arange(2, 6)
    amplitudes = rng.uniform(0, 0.12, size=angles.size)
    phases = rng.uniform(0, 2 * np.pi, size=angles.size)
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    theta = np.arctan2(y, x)
    radius = 0.5 * size * (0.78 + (amplitudes[:, None, None] * np.cos(angles[:, None, None] * theta + phases[:, None, None])).sum(0))
    return np.hypot(x, y) < radius


def _background(rng: np.random.RandomState, photos: dict[str, np.ndarray], width: int, height: int) -> np.ndarray:
    photo = photos[BACKGROUNDS[rng.randint(len(BACKGROUNDS))]]
    image = _crop(rng, photo, width, height, (0.4, 1.0)).astype(np.float32)
    tint = rng.uniform(0.6, 1.0, size=3)
    return (image * tint).clip(0, 255)


def _paste(rng, image, label, photos, horse, class_id, size_range) -> np.ndarray:
    """Paste one object of `class_id`; returns its full (unoccluded) mask."""
    height, width = label.shape
    size = int(min(height, width) * rng.uniform(*size_range))
    shape = _shape(rng, horse, size)
    texture = _crop(rng, photos[CLASSES[class_id]], size, size, (0.3, 0.7)).astype(np.float32)
    texture *= rng.uniform(0.85, 1.15)
    top = rng.randint(0, height - size + 1)
    left = rng.randint(0, width - size + 1)
    full = np.zeros_like(label, dtype=bool)
    full[top:top + size, left:left + size] = shape
    image[full] = texture[shape].clip(0, 255)
    label[full] = class_id + 1
    return full


def _compose(rng, photos, horse, primary: int) -> tuple[np.ndarray, np.ndarray]:
    width, height = rng.randint(320, 449), rng.randint(320, 449)
    image = _background(rng, photos, width, height)
    label = np.zeros((height, width), dtype=np.uint8)
    primary_mask = _paste(rng, image, label, photos, horse, primary, (0.4, 0.7))
    if rng.rand() < SECOND_CLASS_PROBABILITY:
        second = (primary + 1 + rng.randint(len(CLASSES) - 1)) % len(CLASSES)
        for _ in range(20):
            trial_image, trial_label = image.copy(), label.copy()
            _paste(rng, trial_image, trial_label, photos, horse, second, (0.3, 0.5))
            if (trial_label == primary + 1).sum() >= 0.5 * primary_mask.sum():
                image, label = trial_image, trial_label
                break
    return image.round().astype(np.uint8), label


def generate(root: Path) -> None:
    """Write the demo dataset into `root` (which must not exist yet)."""
    rng = np.random.RandomState(SEED)
    photos = {name: _photo(name) for name in (*CLASSES, *BACKGROUNDS)}
    horse = _horse()
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines: dict[str, list[list[str]]] = {}
    for split, per_class in IMAGES_PER_CLASS.items():
        lines[split] = [[] for _ in range(FOLDS)]
        for number in range(per_class * len(CLASSES)):
            image_id = f"{split}_{number:04d}"
            image, label = _compose(rng, photos, horse, primary=number % len(CLASSES))
            Image.fromarray(image).save(root / "images" / f"{image_id}.png", compress_level=1)
            Image.fromarray(label).save(root / "labels" / f"{image_id}.png")
            for class_id in sorted(int(v) - 1 for v in np.unique(label) if v):
                lines[split][class_id // (len(CLASSES) // FOLDS)].append(f"{image_id}__{class_id + 1:02d}")
    for split, folds in lines.items():
        folder = root / "splits" / "demo" / split
        folder.mkdir(parents=True)
        for fold, fold_lines in enumerate(folds):
            (folder / f"fold{fold}.txt").write_text("".join(line + "\n" for line in fold_lines))
    (root / "classes.txt").write_text("".join(name + "\n" for name in CLASSES))
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    (root / "DATASET.json").write_text(json.dumps({"name": "demo", "version": VERSION, "seed": SEED,
                                                   "content_sha256": digest.hexdigest()}, indent=2))


def ensure_generated(root: Path) -> None:
    if (root / "DATASET.json").is_file():
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    print(f"fssbench: generating the demo dataset in {root} (once; about 20 s)", file=sys.stderr)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        generate(staging / "data")
        os.replace(staging / "data", root)
    except OSError:
        if not (root / "DATASET.json").is_file():  # not a concurrent generator that won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class DemoDataset(PairListDataset):
    name = "demo"
    classes = CLASSES
    list_folder = "demo"
    classes_per_fold = len(CLASSES) // FOLDS
    layout = ("  <data root>/fssbench-demo-v1/   (generated by fssbench; without --data-root it lives in\n"
              "                                   the cache, $FSSBENCH_CACHE/demo-v1)\n"
              "    images/<id>.png  labels/<id>.png  splits/demo/{val,trn}/fold<i>.txt  classes.txt")

    @classmethod
    def open(cls, data_root: Path | None) -> "DemoDataset":
        if data_root is None:
            root = cache_dir() / f"demo-v{VERSION}"
        elif not Path(data_root).is_dir():
            return cls(Path(data_root))  # the base class explains the missing root
        else:
            root = Path(data_root) / f"fssbench-demo-v{VERSION}"
        ensure_generated(root)
        return cls(root)

    def image_list_files(self) -> list[Path]:
        return [self.split_path("val", fold) for fold in range(FOLDS)]

    def image_list(self) -> list[str]:
        """The demo's stand-in for DIaM's val list: every val image once, in split-list order."""
        lines = (image_id for fold in range(FOLDS) for image_id, _ in self.split_list("val", fold))
        return list(dict.fromkeys(lines))

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"images/{image_id}.png", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        return self.inside_root(f"labels/{image_id}.png", f"image id {image_id!r}")

    def instance_path(self, image_id: str) -> Path:
        """Each class appears once per image, so the label map doubles as the instance map."""
        return self.label_path(image_id)

    def fingerprint(self) -> dict[str, str]:
        info = json.loads((self.root / "DATASET.json").read_text())
        return {"version": str(info["version"]), "content_sha256": info["content_sha256"]}
