"""An HSNet-style evaluation loop, the baseline `fssbench bench` measures the harness against.

Written after HSNet's test.py, data/coco.py, data/pascal.py and common/evaluation.py: a torch
Dataset whose __getitem__ opens and decodes every image and mask of the episode each time (no cache),
torchvision's Resize + ToTensor + Normalize on the images, masks binarized then resized with nearest
interpolation in float, the ignore boundary only where the dataset has one (HSNet's PASCAL reader
computes it, its COCO and FSS-1000 readers do not), a DataLoader (batch size 1, HSNet's default of 0
workers), and the area
intersection and union from `torch.histc` accumulated per class with `index_add_`. The method is the
oracle (the prediction is the query mask), so the time measured is the loop's own. Episodes are the
manifest's, so both loops do the same work.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fssbench.harness.datasets import IGNORE_LABEL, DatasetReader
from fssbench.harness.episodes import Episode

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class EpisodeDataset(Dataset):
    def __init__(self, reader: DatasetReader, episodes: list[Episode], size: int) -> None:
        self.reader, self.episodes = reader, episodes
        self.transform = transforms.Compose([transforms.Resize(size=(size, size)), transforms.ToTensor(),
                                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        self.has_ignore_label = reader.ignore(torch.full((1, 1), IGNORE_LABEL)) is not None

    def __len__(self) -> int:
        return len(self.episodes)

    def read_mask(self, image_id: str, class_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = torch.tensor(np.array(Image.open(self.reader.label_path(image_id))))
        boundary = (mask / IGNORE_LABEL).floor() if self.has_ignore_label else None  # data/pascal.py only
        mask[mask != class_id + 1] = 0
        mask[mask == class_id + 1] = 1
        return mask, boundary

    def resize(self, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(mask.unsqueeze(0).unsqueeze(0).float(), like.size()[-2:], mode="nearest").squeeze()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        episode = self.episodes[index]
        query_img = self.transform(Image.open(self.reader.image_path(episode.query)).convert("RGB"))
        query_mask, query_boundary = self.read_mask(episode.query, episode.class_id)
        query_mask = self.resize(query_mask, query_img)
        support_imgs = torch.stack([self.transform(Image.open(self.reader.image_path(name)).convert("RGB"))
                                    for name in episode.supports])
        support_masks = torch.stack([self.resize(self.read_mask(name, episode.class_id)[0], support_imgs)
                                     for name in episode.supports])
        item = {"query_img": query_img, "query_mask": query_mask, "support_imgs": support_imgs,
                "support_masks": support_masks, "class_id": torch.tensor(episode.class_id)}
        if query_boundary is not None:
            item["query_ignore_idx"] = self.resize(query_boundary, query_img)
        return item


def classify_prediction(pred_mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """HSNet's Evaluator.classify_prediction: [2, B] intersection and union areas from histograms."""
    gt_mask, ignore = batch["query_mask"], batch.get("query_ignore_idx")
    if ignore is not None:  # PASCAL-5i
        assert torch.logical_and(ignore, gt_mask).sum() == 0
        gt_mask = gt_mask + ignore * IGNORE_LABEL
        pred_mask[gt_mask == IGNORE_LABEL] = IGNORE_LABEL
    area_inter, area_pred, area_gt = [], [], []
    for _pred_mask, _gt_mask in zip(pred_mask, gt_mask):
        _inter = _pred_mask[_pred_mask == _gt_mask]
        _area_inter = torch.tensor([0, 0]) if _inter.size(0) == 0 else torch.histc(_inter, bins=2, min=0, max=1)
        area_inter.append(_area_inter)
        area_pred.append(torch.histc(_pred_mask, bins=2, min=0, max=1))
        area_gt.append(torch.histc(_gt_mask, bins=2, min=0, max=1))
    area_inter, area_pred, area_gt = torch.stack(area_inter).t(), torch.stack(area_pred).t(), torch.stack(area_gt).t()
    return area_inter, area_pred + area_gt - area_inter


def hsnet_style_miou(reader: DatasetReader, episodes: list[Episode], size: int) -> float:
    """Run the episodes through the HSNet-style loop with the oracle; the fold's mIoU (100 when right)."""
    loader = DataLoader(EpisodeDataset(reader, episodes, size), batch_size=1, shuffle=False, num_workers=0)
    classes = reader.fold_classes(episodes[0].fold)
    intersection = torch.zeros(2, len(reader.class_names))
    union = torch.zeros(2, len(reader.class_names))
    for batch in loader:
        pred_mask = batch["query_mask"].clone()  # the oracle
        inter, uni = classify_prediction(pred_mask, batch)
        intersection.index_add_(1, batch["class_id"], inter.float())
        union.index_add_(1, batch["class_id"], uni.float())
    iou = intersection[1, classes] / torch.clamp(union[1, classes], min=1)
    return float(iou.mean()) * 100
