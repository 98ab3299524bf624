"""Loading episodes: each image and label map is decoded and resized once per run, then cached.

Images are squashed to the evaluation resolution with PIL's bilinear filter (what HSNet's
torchvision `Resize` does on PIL images); label maps are resized with torch's nearest-neighbour
interpolation (what HSNet does) before any class is extracted, so resizing commutes with binarizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fssbench.datasets import DatasetReader
from fssbench.episodes import Episode
from fssbench.errors import DataError


@dataclass
class LoadedEpisode:
    query_image: torch.Tensor  # [3, S, S] uint8
    query_mask: torch.Tensor  # [S, S] bool
    query_ignore: torch.Tensor | None  # [S, S] bool, pixels excluded from scoring
    support_images: torch.Tensor  # [K, 3, S, S] uint8
    support_masks: torch.Tensor  # [K, S, S] bool


def _read(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is unreadable or corrupt ({exc}); re-extract or re-download it") from None


class EpisodeLoader:
    def __init__(self, reader: DatasetReader, size: int) -> None:
        self.reader = reader
        self.size = size
        self.decoded = 0  # images decoded so far (each at most once per run)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def image_and_label(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._cache.get(image_id)
        if cached is None:
            cached = self._cache[image_id] = self._decode(image_id)
        return cached

    def _decode(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        image_path = self.reader.image_path(image_id)
        label_path = self.reader.label_path(image_id)
        image = _read(image_path)
        label = self.reader.decode_label(_read(label_path))
        if label.ndim != 2 or (self.reader.labels_match_images and label.shape[::-1] != image.size):
            raise DataError(
                f"{label_path} has shape {label.shape} but its image {image_path} is "
                f"{image.size[0]}x{image.size[1]}; the label map must be one channel of the same size"
            )
        resized = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        label = torch.from_numpy(np.array(label))
        label = F.interpolate(label[None, None].float(), (self.size, self.size), mode="nearest")[0, 0]
        self.decoded += 1
        image_tensor = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).contiguous()
        return image_tensor, label.to(torch.int16)

    def load(self, episode: Episode) -> LoadedEpisode:
        query_image, query_label = self.image_and_label(episode.query)
        query_ignore = self.reader.ignore(query_label)
        support_images, support_masks = [], []
        for support in episode.supports:
            image, label = self.image_and_label(support)
            support_images.append(image)
            support_masks.append(self.reader.foreground(label, episode.class_id))
        return LoadedEpisode(
            query_image=query_image,
            query_mask=self.reader.foreground(query_label, episode.class_id),
            query_ignore=query_ignore,
            support_images=torch.stack(support_images),
            support_masks=torch.stack(support_masks),
        )
