"""Loading episodes: each image and label map is decoded and resized once, then kept in a bounded
cache (`--cache-mb`) that knows which images the fold's episodes will still ask for: an image is
dropped after its last expected use and least-recently-used ones are evicted at the budget, so at COCO
scale, where most images are touched once, memory holds only the few that will be needed again.

Images are squashed to the evaluation resolution with PIL's bilinear filter (what HSNet's
torchvision `Resize` does on PIL images); label maps are resized like torch's nearest-neighbour
interpolation (what HSNet does), by indexing with the same source indices, before any class is
extracted, so resizing commutes with binarizing. In original-resolution mode the query's label map is
also kept at its original size for scoring.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from collections import Counter, OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import DataError
from fssbench.harness.files import open_image
from fssbench.harness.supports import annotate, needs_instances


@dataclass
class LoadedEpisode:
    query_image: torch.Tensor  # [3, S, S] uint8
    query_mask: torch.Tensor  # [S, S] bool
    query_ignore: torch.Tensor | None  # [S, S] bool, pixels excluded from scoring
    scored_mask: torch.Tensor  # the ground truth predictions are scored against: query_mask, or the
    scored_ignore: torch.Tensor | None  # original-size mask in original-resolution mode
    support_images: torch.Tensor  # [K, 3, S, S] uint8
    support_masks: torch.Tensor  # [K, S, S] bool: annotated foreground
    support_labelled: torch.Tensor  # [K, S, S] bool: pixels the support annotation labels (fg or bg)


Decoded = TypeVar("Decoded")
Tensors = tuple[torch.Tensor | None, ...]


def read_image(path: Path, then: Callable[[Image.Image], Decoded] = Image.Image.copy) -> Decoded:
    """`then(image)` on the decoded image while its file is open (by default a copy that outlives it);
    a missing or corrupt file raises a DataError naming it."""
    with open_image(path) as image:
        image.load()
        return then(image)


def nearest_indices(source: int, target: int) -> np.ndarray:
    """The source index of each target index under `torch.nn.functional.interpolate(mode="nearest")`,
    computed as its CPU kernel does (float32 scale, floor, clamp; exact for equal and doubled sizes), so
    label maps are resized by indexing, without a float copy (tests/test_loading_cache.py compares the two)."""
    if target == source:
        return np.arange(target)
    if target == 2 * source:
        return np.arange(target) >> 1
    scale = np.float32(source) / np.float32(target)
    return np.minimum(np.floor(np.arange(target, dtype=np.float32) * scale).astype(np.int64), source - 1)


def resize_nearest(label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A label or instance map [H, W] at `size`, equal to torch's nearest interpolation: uint8 if the map
    is (most label files; half the bytes to keep), else int16."""
    label = np.asarray(label)
    rows, columns = nearest_indices(label.shape[0], size[0]), nearest_indices(label.shape[1], size[1])
    resized = label[rows][:, columns]  # rows first: whole-row copies
    return torch.from_numpy(resized if resized.dtype == np.uint8 else resized.astype(np.int16))


OWN_MAPPING_BYTES = 1 << 18  # cache entries at least this large get their own memory mapping


def kept_apart(tensors: Tensors) -> Tensors:
    """Copies of an entry's tensors in one anonymous memory mapping of their own, returned to the system
    when the entry is freed. Kept in the heap among the loop's short-lived buffers, long-lived entries
    pin the freed space around them (glibc keeps it): 160 MB more peak RSS at COCO-like 5-shot. Small
    entries, systems without anonymous mappings and a refused mapping keep the tensors as they are."""
    present = [tensor for tensor in tensors if tensor is not None]
    offsets, total = [], 0
    for tensor in present:
        offsets.append(total)
        total += -(-tensor.numel() * tensor.element_size() // 64) * 64  # each 64-byte aligned
    if total < OWN_MAPPING_BYTES or not hasattr(mmap, "MAP_ANONYMOUS"):  # Windows has none
        return tensors
    try:
        mapping = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # e.g. the process's mapping count limit
        return tensors
    copies = iter([torch.frombuffer(mapping, dtype=tensor.dtype, count=tensor.numel(), offset=offset)
                   .view(tensor.shape).copy_(tensor) for tensor, offset in zip(present, offsets)])
    return tuple(None if tensor is None else next(copies) for tensor in tensors)


PADDING = -1  # label value of the canvas outside the image in "pad" mode


def pad_size(height: int, width: int, size: int) -> tuple[int, int]:
    """DIaM's `find_new_hw`: long side to `size`, short side scaled, both floored to a multiple of 8."""
    if height >= width:
        height, width = size, int(width * (size * 1.0 / height))
    else:
        height, width = int(height * (size * 1.0 / width)), size
    return height // 8 * 8, width // 8 * 8


def default_cache_mb() -> int:
    """min(25% of the machine's memory, 4096 MB)."""
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the cap
        return 4096
    return int(min(memory_mb // 4, 4096))


class DecodeCache:
    """Decoded tensors under a byte budget, safe to share between the loading threads: an entry being
    decoded by one thread is waited for, never decoded twice at once. Bytes are those of the tensors held;
    an entry larger than the whole budget is not kept.

    `expect(keys)` announces the uses to come, in order (a key once per use). An entry is then dropped
    after its last expected use (one expected once is never stored), and at the budget the entry whose
    next use is farthest goes first (Belady's rule, optimal when the future is known), so the cache
    holds what will be asked for again soonest; at COCO scale that is little. Keys never announced are
    evicted before announced ones, least recently used first (the whole rule when nothing is announced)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = self.peak_bytes = 0
        self.hits = self.evictions = 0
        self.misses: Counter[str] = Counter()  # decodes per kind of entry (the key's first part)
        self._entries: OrderedDict[Hashable, tuple[Tensors, int]] = OrderedDict()
        self._pending: dict[Hashable, Future] = {}
        self._uses: dict[Hashable, deque[int]] = {}  # positions of the announced uses still to come
        self._announced = 0
        self._lock = threading.Lock()

    def expect(self, keys: Iterable[Hashable]) -> None:
        with self._lock:
            for key in keys:
                self._uses.setdefault(key, deque()).append(self._announced)
                self._announced += 1

    def _next_use(self, key: Hashable) -> float:
        uses = self._uses.get(key)
        return uses[0] if uses else math.inf

    def _exhausted(self, key: Hashable) -> bool:
        """Announced, and every announced use has been made."""
        uses = self._uses.get(key)
        return uses is not None and not uses

    def get(self, key: tuple[str, str], make: Callable[[], Tensors]) -> Tensors:
        with self._lock:
            if self._uses.get(key):
                self._uses[key].popleft()
            entry = self._entries.get(key)
            if entry is not None:
                self.hits += 1
                if self._exhausted(key):  # its last announced use
                    self._remove(key)
                else:
                    self._entries.move_to_end(key)
                return entry[0]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = Future()
                self.misses[key[0]] += 1
            else:
                self.hits += 1
        if not owner:
            return pending.result()
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        self._put(key, value)
        pending.set_result(value)
        return value

    def _put(self, key: tuple[str, str], value: Tensors) -> None:
        size = sum(tensor.numel() * tensor.element_size() for tensor in value if tensor is not None)
        with self._lock:
            if size > self.budget_bytes or self._exhausted(key):
                del self._pending[key]
                return
        kept = kept_apart(value)  # outside the lock: the other loading threads go on meanwhile
        with self._lock:
            del self._pending[key]
            if self._exhausted(key):  # a waiter took its last use meanwhile
                return
            self._entries[key] = (kept, size)
            self.bytes += size
            while self.bytes > self.budget_bytes:  # the farthest next use goes (first of equals: the LRU)
                self._remove(max(self._entries, key=self._next_use))
                self.evictions += 1
            self.peak_bytes = max(self.peak_bytes, self.bytes)

    def _remove(self, key: Hashable) -> None:
        _, size = self._entries.pop(key)
        self.bytes -= size

    def __len__(self) -> int:
        return len(self._entries)


class EpisodeLoader:
    def __init__(self, reader: DatasetReader, size: int, support: str = "mask", seed: int = 0,
                 original_resolution: bool = False, mode: str = "squash", cache_mb: int | None = None) -> None:
        self.reader = reader
        self.size = size
        self.mode = mode
        self.support = support
        self.seed = seed
        self.original_resolution = original_resolution
        self.cache_mb = default_cache_mb() if cache_mb is None else cache_mb
        self.cache = DecodeCache(self.cache_mb * 2**20)

    @property
    def decoded(self) -> int:
        """Images decoded so far (an image evicted and needed again is decoded again)."""
        return self.cache.misses["image"]

    def cache_statistics(self) -> dict[str, int | float]:
        cache = self.cache
        return {"cache_budget_mb": self.cache_mb, "cache_peak_mb": cache.peak_bytes / 2**20,
                "cache_hits": cache.hits, "cache_evictions": cache.evictions}

    def image_and_label(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        image, label, _ = self.decoded_image(image_id)
        return image, label

    def decoded_image(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Image [3, S, S] uint8, label map [S, S] int16, and in original-resolution mode the label map at
        its original size. (The cache keeps uint8 label maps as uint8; they widen here, where class ids
        above 255 would otherwise wrap when compared.)"""
        image, label, original = self.cache.get(("image", image_id), lambda: self._decode(image_id))
        return image, label.to(torch.int16), original

    def _decode(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        image_path = self.reader.image_path(image_id)
        label_path = self.reader.label_path(image_id)
        image, size = read_image(image_path, lambda image: (self._resize_image(image), image.size))
        label = read_image(label_path, self.reader.decode_label)
        if label.ndim != 2 or (self.reader.labels_match_images and label.shape[::-1] != size):
            raise DataError(
                f"{label_path} has shape {label.shape} but its image {image_path} is "
                f"{size[0]}x{size[1]}; the label map must be one channel of the same size"
            )
        original = torch.from_numpy(np.array(label)).to(torch.int16) if self.original_resolution else None
        return image, self._resize_map(label), original

    def _resize_image(self, image: Image.Image) -> torch.Tensor:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if self.mode == "pad":
            return self._pad(rgb)
        resized = rgb.resize((self.size, self.size), Image.BILINEAR)
        # PIL holds RGB as RGBX and copies it out holding the GIL: as RGBX that is a plain copy per line
        # (packing to RGB, as np.asarray asks, takes longer); numpy drops X in its one copy to [3, S, S]
        pixels = np.frombuffer(resized.tobytes("raw", "RGBX"), dtype=np.uint8).reshape(self.size, self.size, 4)
        return torch.from_numpy(pixels[:, :, :3].transpose(2, 0, 1).copy())

    def _resize_map(self, label: np.ndarray) -> torch.Tensor:
        """A label or instance map at the evaluation resolution, squashed or padded like its image."""
        if self.mode != "pad":
            return resize_nearest(label, (self.size, self.size))
        height, width = pad_size(*np.shape(label), self.size)
        padded = torch.full((self.size, self.size), PADDING, dtype=torch.int16)
        padded[:height, :width] = resize_nearest(label, (height, width))
        return padded

    def _pad(self, image: Image.Image) -> torch.Tensor:
        """DIaM's (and PFENet's) Resize: cv2 INTER_LINEAR at the aspect-kept size, top-left in a size x size
        canvas of 0; labels go the same way with INTER_NEAREST and PADDING (`_resize_map`). DIaM resizes
        float images; here the result is rounded to uint8 like every image the loader hands out (< 0.5/255)."""
        height, width = pad_size(image.height, image.width, self.size)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float()
        resized = F.interpolate(pixels, (height, width), mode="bilinear", align_corners=False)[0]
        image_tensor = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
        image_tensor[:, :height, :width] = resized.round().clamp(0, 255).to(torch.uint8)
        return image_tensor

    def ignore(self, label: torch.Tensor) -> torch.Tensor | None:
        """Pixels excluded from scoring: the dataset's ignore label, and padding."""
        ignore = self.reader.ignore(label)
        if self.mode != "pad":
            return ignore
        return label == PADDING if ignore is None else ignore | (label == PADDING)

    def instances(self, image_id: str) -> torch.Tensor:
        return self.cache.get(("instances", image_id), lambda: (self._decode_instances(image_id),))[0].to(torch.int16)

    def _decode_instances(self, image_id: str) -> torch.Tensor:
        path = self.reader.instance_path(image_id)
        if path is None:
            raise DataError(f"box supports need instance maps, and dataset {self.reader.name!r} has none")
        return self._resize_map(read_image(path, np.asarray))

    def expect(self, episodes: Iterable[Episode]) -> None:
        """Announce the episodes about to be loaded, so the cache keeps exactly the images they reuse."""
        instances = needs_instances(self.support)
        self.cache.expect(key for episode in episodes for key in (
            ("image", episode.query), *(("image", image) for image in episode.supports),
            *(("instances", image) for image in episode.supports if instances)))

    def expect_images(self, image_ids: Iterable[str]) -> None:
        """Announce images (with their label maps) about to be loaded through `decoded_image`."""
        self.cache.expect(("image", image_id) for image_id in image_ids)

    def load(self, episode: Episode) -> LoadedEpisode:
        """One episode's tensors; safe to call from several threads at once (the cache is shared)."""
        query_image, query_label, query_original = self.decoded_image(episode.query)
        images, masks, labelled = [], [], []
        for position, support in enumerate(episode.supports):
            image, label = self.image_and_label(support)
            instances = self.instances(support) if needs_instances(self.support) else None
            seed = (self.seed, episode.fold, episode.index, position)
            mask, known = annotate(self.support, self.reader.foreground(label, episode.class_id), instances, seed)
            images.append(image)
            masks.append(mask)
            labelled.append(known)
        query_mask = self.reader.foreground(query_label, episode.class_id)
        query_ignore = self.ignore(query_label)
        if self.original_resolution:
            scored_mask = self.reader.foreground(query_original, episode.class_id)
            scored_ignore = self.reader.ignore(query_original)
        else:
            scored_mask, scored_ignore = query_mask, query_ignore
        return LoadedEpisode(
            query_image=query_image,
            query_mask=query_mask,
            query_ignore=query_ignore,
            scored_mask=scored_mask,
            scored_ignore=scored_ignore,
            support_images=torch.stack(images),
            support_masks=torch.stack(masks),
            support_labelled=torch.stack(labelled),
        )
