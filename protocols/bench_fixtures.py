"""Generated datasets for `fssbench bench`, in the real readers' layouts and with the real lists' shape,
so a benchmark runs the published protocols (coco20i-*, pascal5i-*) end to end without the data.

- COCO-like: fold 0 of COCO-20i with the class list sizes of HSNet's val pickle (19217 person images,
  142 for the smallest class, ...), 640x480 JPEGs and HSNet-style mask PNGs. HSNet's sampler touches
  1782 distinct images in the 2000 loads of 1000 one-shot episodes (4270 in 6000 five-shot loads);
  here each image belongs to one class list, so the counts come out close to those.
- PASCAL-like: fold 0 of PASCAL-5i with the real list's 346 lines (80/57/86/58/65 per class),
  500x375 JPEGs and SBD-style masks (class id + 1, a 255 ignore boundary).

Only the images the requested episodes touch are written (a COCO list names 35783 of them), once,
under the cache; the manifest is built from the lists alone, as always.
"""

from __future__ import annotations

import functools
import pickle
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fssbench import registry
from fssbench.harness.cache import cache_dir
from fssbench.harness.episodes import build_manifest

# HSNet's splits/coco/val/fold0.pkl: images per class of fold 0 (classes 0, 4, ..., 76)
COCO_FOLD0_CLASS_SIZES = (19217, 727, 816, 172, 1203, 699, 805, 709, 142, 655,
                          516, 312, 577, 331, 3648, 3722, 200, 389, 773, 170)
PASCAL_FOLD0_CLASS_LINES = (80, 57, 86, 58, 65)  # HSNet's splits/pascal/val/fold0.txt
FIXTURES = {"coco": ("coco", "coco20i-{shot}shot", (640, 480)), "pascal": ("pascal", "pascal5i-{shot}shot", (500, 375))}
VERSION = 1


def fixture_root(name: str) -> Path:
    return cache_dir() / f"bench-v{VERSION}" / name


def prepare_fixture(name: str, shots: tuple[int, ...], episodes: int) -> Path:
    """The data root of fixture `name` (coco or pascal), with every image the first `episodes` episodes
    of fold 0 of its 1- and 5-shot protocols touch."""
    dataset, protocol, size = FIXTURES[name]
    root = fixture_root(name)
    (_write_coco_lists if name == "coco" else _write_pascal_lists)(root)
    reader = registry.datasets.get(dataset)(root)
    touched: dict[str, int] = {}
    for shot in shots:
        spec = registry.protocols.get(protocol.format(shot=shot))
        sampler = registry.samplers.get(spec.sampler["name"])
        manifest = build_manifest(spec, reader, sampler, 0, spec.seed, cache_dir()).head(episodes)
        for episode in manifest.episodes:
            for image in (episode.query, *episode.supports):
                touched[image] = episode.class_id
    for image_id, class_id in touched.items():
        image_path, label_path = reader.image_path(image_id), reader.label_path(image_id)
        if not label_path.is_file():
            _write_example(image_path, label_path, class_id, size, ignore_boundary=name == "pascal")
    return root


def _write_coco_lists(root: Path) -> None:
    path = root / "splits" / "coco" / "val" / "fold0.pkl"
    if path.is_file():
        return
    lists, number = {}, 0
    for position, count in enumerate(COCO_FOLD0_CLASS_SIZES):
        lists[4 * position] = [f"val2014/COCO_val2014_{number + k:012d}.jpg" for k in range(count)]
        number += count
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(lists))
    partial.replace(path)


def _write_pascal_lists(root: Path) -> None:
    path = root / "splits" / "pascal" / "val" / "fold0.txt"
    if path.is_file():
        return
    lines, number = [], 0
    for class_id, count in enumerate(PASCAL_FOLD0_CLASS_LINES):
        lines += [f"2007_{number + k:06d}__{class_id + 1:02d}" for k in range(count)]
        number += count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _write_example(image_path: Path, label_path: Path, class_id: int, size: tuple[int, int],
                   ignore_boundary: bool) -> None:
    """A photo-like JPEG (smooth shading, shapes, noise) and its mask: the class's object an ellipse."""
    rng = np.random.default_rng(zlib.crc32(image_path.name.encode()))
    width, height = size if rng.random() < 0.7 else size[::-1]
    slope = rng.uniform(-0.15, 0.15, (2, 3)).astype(np.float32)
    shading = (rng.uniform(40, 200, 3).astype(np.float32) + np.arange(width, dtype=np.float32)[:, None] * slope[0]
               + np.arange(height, dtype=np.float32)[:, None, None] * slope[1])
    top, left = int(rng.integers(0, 64)), int(rng.integers(0, 64))
    pixels = shading + _noise()[top:top + height, left:left + width]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    label = Image.new("L", (width, height), 0)
    draw, mask = ImageDraw.Draw(image), ImageDraw.Draw(label)
    for _ in range(3):
        box = _box(rng, width, height)
        draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    box = _box(rng, width, height)
    draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    if ignore_boundary:
        mask.ellipse(box, fill=255)
        mask.ellipse((box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3), fill=class_id + 1)
    else:
        mask.ellipse(box, fill=class_id + 1)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(image_path, quality=90)
    partial = label_path.with_suffix(".partial.png")
    label.save(partial)
    partial.replace(label_path)  # the label is written last: its presence marks a complete example


@functools.lru_cache(maxsize=1)
def _noise() -> np.ndarray:
    """Sensor-like noise, drawn once and cropped per image (drawing it per image would dominate)."""
    return np.random.default_rng(0).normal(0, 12, (768, 768, 3)).astype(np.float32)


def _box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    left, top = int(rng.integers(0, width * 2 // 3)), int(rng.integers(0, height * 2 // 3))
    return (left, top, left + int(rng.integers(width // 8, width // 3)), top + int(rng.integers(height // 8, height // 3)))
