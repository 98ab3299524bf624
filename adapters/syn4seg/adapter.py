"""The syn4seg adapter: the GFSS learner plus synthetic novel-class data with refined pseudo-labels.

Per DIaM run (`adapt`, supports given):
1. the gfss-learner (`--weights head=`, a base checkpoint or a folder of them) registers the novel classes
   on the supports (imprinting + calibration, `--option calibrate`);
2. HDIG: N images per novel class from the image source (synthesis.py; shared by every run and fold);
3. pseudo-labels: the registered learner labels each image, then APF, APR, SABR (labels.py);
4. the final head is trained on the fold's base data + the refined synthetic set (training.py), starting
   from the base head with the registered novel rows;
`segment` labels queries with that head. With `--option synthetic=false` the run is the learner alone
(the Table II baseline), so every ablation row is a syn4seg run of its own.

Base data come from the run's dataset (`SetupContext.reader`, the protocol's folds): the adapter trains
inside the run, so each leaderboard row is one command and the training time is journaled as DIaM's
preparation time (`adapt_ms`). Refined labels and trained heads are cached (labels.py, training.py): a
resumed or repeated run reads them.

SABR needs SAM ViT-H (`--weights sam=sam_vit_h_4b8939.pth`); `--option sam=tiny` is a tiny random SAM for
tests and timing (its masks mean nothing). `--random-init` makes the learner random (timing only).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fssbench.adapters.backbones import BACKBONES
from fssbench.adapters.gfss_learner.adapter import GfssLearnerAdapter
from fssbench.adapters.gfss_learner.checkpoint import TRAIN_COMMAND, load_checkpoint
from fssbench.adapters.gfss_learner.config import DEFAULT, GfssLearnerConfig
from fssbench.adapters.gfss_learner.training import FeatureCache, TrainingSample
from fssbench.adapters.syn4seg.labels import APR_CANDIDATES, STAGES, PseudoLabeller
from fssbench.adapters.syn4seg.refine import FREE
from fssbench.adapters.syn4seg.synthesis import SyntheticImages
from fssbench.adapters.syn4seg.training import cached_head, head_key, head_path, train_final_head
from fssbench.adapters.synthesis.cost import SynthesisCost
from fssbench.adapters.synthesis.quality import MaskQuality
from fssbench.adapters.synthesis.store import SyntheticStore
from fssbench.harness.contract import GfssAdapter, GfssLabelSpace, GfssSupportSet, OptionValue, SetupContext, WeightSpec
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import SourceSettings, canonical_sha256, tensor_sha256

SYN4SEG_OPTIONS: dict[str, OptionValue] = {
    "synthetic": True, "apf": True, "apr": True, "sabr": True, "n_per_class": 8, "source": "diffusers",
    "prompts": "hdig", "dedup": "auto", "lambda": 0.6, "beta": 0.7, "delta": 5.0, "apr_candidates": "novel+base",
    "sam": "full", "train_steps": 100, "ratio": 0.5, "calibrate": 100, "cfg": 5.0, "sample_steps": 40,
    "resolution": 768, "sd_config": "full", "coarse_noise": 0.35,
}
SYN4SEG_CHOICES = {"prompts": ("hdig", "class-name"), "dedup": ("auto", "on", "off"), "apr_candidates": APR_CANDIDATES,
                   "sam": ("full", "tiny"), "sd_config": ("full", "tiny")}
SAM_SOURCE = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
STAGE_GROUPS = {"synthesis": ("prompt_dedup", "generation"), "refinement": ("initial_masks", "apf", "apr", "sabr"),
                "training": ("training",)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Syn4SegAdapter(GfssAdapter):
    description = ("Syn4Seg: the GFSS learner trained on base data + synthetic novel-class images (HDIG prompts) "
                   "with pseudo-labels refined by APF, APR and SAM boundary refinement (SABR)")
    weights = (
        WeightSpec("head", "a base checkpoint written by `fssbench train gfss-learner`, or a folder of them (one per "
                   "fold)", TRAIN_COMMAND),
        WeightSpec("backbone", "the --backbone's weights file or folder (none for efficientnet-lite*)",
                   "`fssbench list backbones`", required=False),
        WeightSpec("sam", "SAM ViT-H's sam_vit_h_4b8939.pth, for SABR", SAM_SOURCE, required=False),
        WeightSpec("sd", "a Stable Diffusion folder in diffusers layout: SD 3.5 for --option source=sd3 (the paper's "
                   "SD 3.5-Large), SD 1.x/2.x for --option source=diffusers; also read for prompt deduplication",
                   "https://huggingface.co/stabilityai/stable-diffusion-3.5-large or "
                   "https://huggingface.co/stabilityai/stable-diffusion-2-1 (save_pretrained)", required=False),
        WeightSpec("images", "a folder of generated images per class (<class>/<name>.png), for --option source=folder",
                   "images you generated elsewhere", required=False),
        WeightSpec("prompts", "a prompt file (one prompt per line, {name} for the class) replacing the templates",
                   "an LLM's or your own prompts", required=False),
    )
    option_defaults = SYN4SEG_OPTIONS
    option_choices = SYN4SEG_CHOICES
    backbones = tuple(BACKBONES)

    def packaged_weights(self) -> dict[str, Path]:
        return GfssLearnerAdapter(backbone=self.backbone_name).packaged_weights()

    def setup(self, context: SetupContext) -> None:
        options = self.options
        self._check_options()
        self.context = context
        self.final_head = None
        self.cost, self.quality, self.store = SynthesisCost(), MaskQuality(), SyntheticStore()
        self.used: dict[str, str] = {}
        self.heads: dict[str, str] = {}  # head file -> "trained" or "cached"
        self.labellers: list[PseudoLabeller] = []
        self.feature_cache: FeatureCache = {}
        self.learner = GfssLearnerAdapter({"calibrate": options["calibrate"]}, self.backbone_name)
        if not options["synthetic"]:
            self.learner.setup(context)
            return
        if context.reader is None or not context.folds:
            raise UsageError("syn4seg trains on the run's base data at adapt time: it needs the run's dataset reader "
                             "(SetupContext.reader and folds), which `fssbench eval` passes")
        self.segmenter, self.sam_identity = self._sam(context) if options["sabr"] else (None, None)
        settings = {"cfg": options["cfg"], "steps": options["sample_steps"], "resolution": options["resolution"],
                    "sd_config": options["sd_config"], "coarse_noise": options["coarse_noise"], "seed": context.seed}
        self.synthetic = SyntheticImages(options, SourceSettings(context.device, context.weights, context.random_init,
                                                                 context.class_names, settings), self.store, self.cost)
        self.learner.setup(context)
        self.bases = self._base_checkpoints(context)

    def _check_options(self) -> None:
        options = self.options
        checks = {"lambda": -1 <= options["lambda"] <= 1, "beta": 0 <= options["beta"] <= 1,
                  "delta": options["delta"] > 0, "ratio": 0 < options["ratio"] < 1,
                  "train_steps": options["train_steps"] >= 1, "n_per_class": options["n_per_class"] >= 1}
        wanted = {"lambda": "in [-1, 1]", "beta": "in [0, 1]", "delta": "> 0", "ratio": "in (0, 1) (0.5: balanced)",
                  "train_steps": ">= 1", "n_per_class": ">= 1"}
        for name, ok in checks.items():
            if not ok:
                raise UsageError(f"--option {name}={options[name]}: must be {wanted[name]}")

    def _base_checkpoints(self, context: SetupContext) -> dict[tuple[int, ...], tuple[dict, GfssLearnerConfig]]:
        """Per fold's base classes: the base checkpoint's identity (sha256) and its training config."""
        if context.random_init:
            return {}
        path = Path(context.weights["head"])
        bases = {}
        for file in sorted(path.glob("*.pt")) if path.is_dir() else [path]:
            contents = load_checkpoint(file)
            bases[tuple(contents["base"])] = ({"file": file.name, "sha256": file_sha256(file)},
                                              GfssLearnerConfig.from_dict(contents["config"]))
        return bases

    def _sam(self, context: SetupContext):
        from fssbench.adapters.syn4seg.sam import load_sam_segmenter, tiny_sam_segmenter

        if self.options["sam"] == "tiny":
            return tiny_sam_segmenter(context.seed, context.device), {"sam": f"tiny-random:seed{context.seed}"}
        if "sam" not in context.weights:
            raise UsageError(f"--option sabr=true needs SAM ViT-H's weights: pass --weights sam=sam_vit_h_4b8939.pth "
                             f"({SAM_SOURCE}), or --option sabr=false; --option sam=tiny is a random SAM for tests")
        path = Path(context.weights["sam"])
        return load_sam_segmenter(path, context.device), {"sam": file_sha256(path)}

    def adapt(self, labels: GfssLabelSpace, supports: GfssSupportSet) -> None:
        self.learner.adapt(labels, supports)
        if not self.options["synthetic"]:
            return
        learner, context = self.learner, self.context
        base, config = self.bases.get(tuple(labels.base), ({"random-init": context.seed}, DEFAULT))
        identity = {"base": base, "backbone": self.backbone_name, "calibrate": self.options["calibrate"],
                    "supports": canonical_sha256([tensor_sha256(supports.images), tensor_sha256(supports.labels)]),
                    **(self.sam_identity or {})}
        labeller = PseudoLabeller(self.options, labels, supports, lambda x: learner.head.embedding(learner.features(x)),
                                  learner.segment, self.segmenter, identity, self.store, self.cost, self.quality)
        self.labellers.append(labeller)
        table = torch.tensor([0] + [class_id + 1 for class_id in labels.base + labels.novel] +
                             [0] * (FREE - labels.size) + [FREE])  # label index -> class id + 1; FREE stays ignored
        samples = []
        for class_id in labels.novel:
            name = context.class_names[class_id]
            for number, image in enumerate(self.synthetic.images(class_id, name)):
                final = labeller.stage_masks(image)[labeller.stages[-1]]
                self.used[image.key] = image.image_sha256
                samples.append(TrainingSample(torch.from_numpy(image.sample.image).permute(2, 0, 1).contiguous(),
                                              table[final], f"synthetic {name} #{number}"))
        novel_rows = learner.classifier[1 + len(labels.base):].detach().clone()
        key = head_key(base, samples, novel_rows, self.options, context.seed)
        head = cached_head(key)
        self.heads[str(head_path(key))] = "cached" if head is not None else "trained"
        if head is None:
            with torch.inference_mode(False), torch.enable_grad(), self.cost.timed("training"):
                head = train_final_head(context.reader, context.folds, labels, learner.head, config, novel_rows.clone(),
                                        samples, learner.features, self.backbone_name, self.options, context.seed,
                                        context.device, key, self.feature_cache)
        self.final_head = head.to(context.device).eval()

    def segment(self, images: torch.Tensor, truth: torch.Tensor | None = None) -> torch.Tensor:
        if self.final_head is None:
            return self.learner.segment(images)
        head = self.final_head
        logits = head.logits(head.embedding(self.learner.features(images)))
        return F.interpolate(logits, images.shape[-2:], mode="bilinear", align_corners=False).argmax(dim=1)

    def report(self) -> dict[str, Any]:
        if not self.options["synthetic"]:
            return {"synthetic": False}
        seconds = self.cost.summary()
        free = {}
        for labeller in self.labellers:
            for stage, (count, total) in labeller.free_fraction.items():
                free.setdefault(stage, [0, 0])
                free[stage][0] += count
                free[stage][1] += total
        quality = self.quality.summary()
        return {
            "synthetic": True, "source": self.synthetic.source.identity(), "prompts": self.synthetic.prompt_source(),
            "synthetic_images": len(self.used), "synthetic_set_sha256": canonical_sha256(sorted(self.used.items())),
            "stages": [stage for stage in STAGES if stage == "raw" or self.options[stage]],
            "pseudo_label_miou": {stage: quality[stage]["miou"] for stage in STAGES if stage in quality},
            "pseudo_labels_scored": {stage: quality[stage]["samples"] for stage in STAGES if stage in quality},
            "free_percent": {stage: 100 * n / total for stage, (n, total) in free.items() if total},
            "cost_s": {group: sum(seconds[stage]["seconds"] for stage in stages if stage in seconds)
                       for group, stages in STAGE_GROUPS.items()},
            "cost": seconds,
            "store": {"root": str(self.store.root), "hits": self.store.counts.hits, "made": self.store.counts.made,
                      "corrupt": self.store.counts.corrupt},
            "heads": {"trained": sum(v == "trained" for v in self.heads.values()),
                      "cached": sum(v == "cached" for v in self.heads.values()), "files": sorted(self.heads)},
        }
