"""The gfss-learner adapter: a trained head per fold, novel classes registered from the run's supports.

`setup` loads `--weights head=`: a checkpoint written by `fssbench train gfss-learner`, or a folder of
them (one per fold, e.g. fold0.pt .. fold3.pt), and builds the `--backbone` the head was trained on.
`adapt` picks the checkpoint whose base classes are the run's (a fold's label space names its base
classes, so a folder serves every fold), then builds the classifier over the label space: a class
the head was trained on keeps its trained weight; every other (novel) class gets the normalized
masked average of the head's embedding over its support pixels (weight imprinting, see model.py),
then those rows and a logit bias per novel class are fine-tuned on the supports, everything else
frozen (calibration.py says how and why). `segment` labels each pixel with the class of highest
logit (cosine logit + bias), the logits upsampled bilinearly from stride 8 to the image size.

Option `calibrate` (steps, default 100): the fine-tuning steps of the novel rows; 0 keeps the imprinted
prototypes as they are (they out-score the trained rows nearly everywhere: an ablation, not a method).

Option `register` (default true): false leaves the novel classes out of the classifier, the base-only
baseline (novel classes are then never predicted, unless the head was trained on them).

Option `cache` (images, default 0): keep the embeddings of the last N query images (keyed by their
pixels), since DIaM's five runs of a fold label the same images again; with it the runs after the
first time mostly cache hits. With --random-init the head (and the backbone) are random: a
timing-only run.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

from fssbench.adapters.backbones import BACKBONES, build_backbone, packaged_backbone_weights
from fssbench.adapters.gfss_learner.calibration import calibrate
from fssbench.adapters.gfss_learner.checkpoint import TRAIN_COMMAND, head_from, load_checkpoint
from fssbench.adapters.gfss_learner.config import DEFAULT
from fssbench.adapters.gfss_learner.model import GfssHead, masked_average
from fssbench.harness.contract import GfssAdapter, GfssLabelSpace, GfssSupportSet, SetupContext, WeightSpec
from fssbench.harness.errors import DataError, UsageError


class GfssLearnerAdapter(GfssAdapter):
    description = ("GFSS learner: frozen backbone + light head trained on base classes; novel classes registered "
                   "as support prototypes in its cosine classifier, fine-tuned on the supports")
    weights = (
        WeightSpec("head", "a checkpoint written by `fssbench train gfss-learner`, or a folder of them (one per fold)",
                   TRAIN_COMMAND),
        WeightSpec("backbone", "the --backbone's weights file or folder (none for efficientnet-lite*)",
                   "`fssbench list backbones`", required=False),
    )
    option_defaults = {"cache": 0, "register": True, "calibrate": 100}
    backbones = tuple(BACKBONES)

    def packaged_weights(self) -> dict[str, Path]:
        return packaged_backbone_weights(self.backbone_name)

    def setup(self, context: SetupContext) -> None:
        if self.options["cache"] < 0:
            raise UsageError(f"--option cache={self.options['cache']}: must be 0 (off) or a number of images")
        if self.options["calibrate"] < 0:
            raise UsageError(f"--option calibrate={self.options['calibrate']}: must be 0 (imprinting alone) or a "
                             "number of fine-tuning steps")
        self.device, self.seed = context.device, context.seed
        self.random_init = context.random_init
        self.heads = {} if context.random_init else self._trained_heads(context.weights["head"])
        self.features = build_backbone(self.backbone_name, context.random_init,
                                       context.weights.get("backbone")).to(context.device)
        self.head: GfssHead | None = None
        self.cached: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def _trained_heads(self, path: Path) -> dict[tuple[int, ...], tuple[str, GfssHead, list[int]]]:
        """Per fold's base classes: the checkpoint's description, its head and its classifier's classes."""
        files = sorted(path.glob("*.pt")) if path.is_dir() else [path]
        if not files:
            raise UsageError(f"--weights head={path}: the folder holds no .pt checkpoint; {TRAIN_COMMAND}")
        heads = {}
        for file in files:
            contents = load_checkpoint(file)
            if contents["backbone"] != self.backbone_name:
                raise UsageError(f"{file} was trained on backbone {contents['backbone']}, not {self.backbone_name}: "
                                 f"pass --backbone {contents['backbone']} or train a head for {self.backbone_name}")
            base = tuple(contents["base"])
            if base in heads:
                raise UsageError(f"--weights head={path}: {heads[base][0]} and {file.name} were both trained for "
                                 "the same fold; keep one per fold")
            heads[base] = (f"{file.name} (fold {contents['fold']})", head_from(contents).to(self.device),
                           list(contents["classes"]))
        return heads

    def _head_for(self, labels: GfssLabelSpace) -> tuple[GfssHead, list[int]]:
        """The head trained for the label space's base classes, and the classes of its classifier rows."""
        base = tuple(labels.base)
        if self.random_init and base not in self.heads:
            torch.manual_seed(self.seed)
            head = GfssHead(sum(self.features.channels), 1 + len(base), DEFAULT).eval().to(self.device)
            self.heads[base] = ("random", head, list(base))
        if base not in self.heads:
            novel = ", ".join(labels.names[len(base) + 1:])
            raise UsageError(f"no --weights head checkpoint was trained for this fold (novel classes {novel}); "
                             f"found {', '.join(name for name, _, _ in self.heads.values())}. "
                             f"Train it with {TRAIN_COMMAND}")
        _, head, classes = self.heads[base]
        return head, classes

    def adapt(self, labels: GfssLabelSpace, supports: GfssSupportSet) -> None:
        head, trained = self._head_for(labels)
        if head is not self.head:  # another fold: cached embeddings came from another head
            self.head, self.cached = head, OrderedDict()
        register = self.options["register"]
        if register:
            with torch.inference_mode(False), torch.no_grad():  # the harness adapts in inference mode
                embedding = self._embed(supports.images, use_cache=False)
        rows = [head.classifier[0].detach()]
        self.unregistered, registered = [], []
        for index, class_id in enumerate(labels.base + labels.novel, start=1):
            if class_id in trained:
                rows.append(head.classifier[trained.index(class_id) + 1].detach())
                continue
            prototype = masked_average(embedding, supports.labels, index) if register else None
            if prototype is None and register:
                raise DataError(f"the supports of class {labels.names[index]!r} label none of its pixels")
            if prototype is None:
                self.unregistered.append(index)
            else:
                registered.append(index)
            rows.append(torch.zeros_like(rows[0]) if prototype is None else prototype)
        self.classifier, self.bias = torch.stack(rows), torch.zeros(len(rows), device=rows[0].device)
        if registered and self.options["calibrate"]:
            with torch.inference_mode(False), torch.enable_grad():
                self.classifier, self.bias = calibrate(embedding, supports.labels, self.classifier.clone(),
                                                       registered, head.scale, self.options["calibrate"])

    def _embed(self, images: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        limit = self.options["cache"] if use_cache else 0
        if not limit:
            return self.head.embedding(self.features(images))
        keys = [hashlib.blake2b(image.cpu().numpy().tobytes(), digest_size=16).digest() for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self.cached]
        if missing:
            computed = self.head.embedding(self.features(images[missing]))
            for position, i in enumerate(missing):
                self.cached[keys[i]] = computed[position]
        for key in keys:
            self.cached.move_to_end(key)
        embedding = torch.stack([self.cached[key] for key in keys])
        while len(self.cached) > limit:
            self.cached.popitem(last=False)
        return embedding

    def segment(self, images: torch.Tensor, truth: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.head.logits(self._embed(images), self.classifier) + self.bias[:, None, None]
        logits = F.interpolate(logits, images.shape[-2:], mode="bilinear", align_corners=False)
        logits[:, self.unregistered] = float("-inf")  # after the upsampling, whose zero weights would make NaNs of it
        return logits.argmax(dim=1)
