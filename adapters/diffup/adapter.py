"""The DiffUp adapter: any registered backbone, a decoder trained with any other, every support annotation.

`setup` loads the decoder checkpoint (`--weights decoder=CKPT`, written by `fssbench train diffup`) and
builds the backbone chosen with `--backbone`, which may differ from the one the decoder was trained
with: the decoder only sees backbone-agnostic priors (the paper's upgrade without re-training).
`predict` builds the priors, runs an ensemble of `ensemble` DDIM samplings of `ddim_steps` steps and
returns the ensemble's mean mask, mapped from [-1, 1] to a foreground probability and resized to the
evaluation resolution. Each episode's initial noise is seeded by (seed option, fold, episode index),
so results do not depend on the batch size or on resuming.

Text supports need a clip-* backbone: the class name is compared with query features in CLIP's
joint space, which ImageNet backbones do not have; with another backbone the episode fails with a
message saying so. With --random-init the decoder (config `paper`, or the `config` option) and the
backbone are random: a timing-only run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fssbench.harness.contract import EpisodeBatch, FssAdapter, SetupContext, WeightSpec
from fssbench.adapters.backbones import BACKBONES, build_backbone, packaged_backbone_weights
from fssbench.adapters.diffup.checkpoint import TRAIN_COMMAND, decoder_from, load_checkpoint
from fssbench.adapters.diffup.config import resolve_config
from fssbench.adapters.diffup.diffusion import Diffusion
from fssbench.adapters.diffup.priors import Conditions, build_conditions, resize
from fssbench.adapters.diffup.unet import UQDD
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import UsageError

FROM_CHECKPOINT = "auto"


def episode_noise(seed: int, episode: Episode, count: int, size: int) -> torch.Tensor:
    """The initial noise [count, 1, size, size] of an episode's ensemble, drawn on the CPU."""
    state = np.random.SeedSequence([seed, episode.fold, episode.index]).generate_state(1)[0]
    return torch.randn((count, 1, size, size), generator=torch.Generator().manual_seed(int(state)))


class DiffUpAdapter(FssAdapter):
    description = "DiffUp: diffusion decoder over backbone-agnostic priors; backbones swap without re-training"
    support_annotations = frozenset({"mask", "box", "scribble", "none", "text"})
    weights = (
        WeightSpec("decoder", "a DiffUp checkpoint written by `fssbench train diffup`",
                   f"{TRAIN_COMMAND} (the authors have released no weights)"),
        WeightSpec("backbone", "the --backbone's weights file or folder (none for efficientnet-lite*)",
                   "`fssbench list backbones`", required=False),
    )
    option_defaults = {"ddim_steps": 50, "ensemble": 5, "seed": 0, "config": FROM_CHECKPOINT}
    backbones = tuple(BACKBONES)

    def packaged_weights(self) -> dict[str, Path]:
        return packaged_backbone_weights(self.backbone_name)

    def setup(self, context: SetupContext) -> None:
        self.device = context.device
        self.decoder = self._decoder(context).to(context.device)
        self.config = self.decoder.config
        self.diffusion = Diffusion(self.config.timesteps, self.config.prediction)
        self._check_sampling_options()
        self.features = build_backbone(self.backbone_name, context.random_init,
                                       context.weights.get("backbone")).to(context.device)

    def _decoder(self, context: SetupContext) -> UQDD:
        chosen = str(self.options["config"])
        if context.random_init:
            torch.manual_seed(context.seed)
            return UQDD(resolve_config("paper" if chosen == FROM_CHECKPOINT else chosen)).eval()
        path = context.weights["decoder"]
        contents = load_checkpoint(path)
        trained = contents["config"]["name"]
        if chosen not in (FROM_CHECKPOINT, trained):
            raise UsageError(f"--option config={chosen}: {path} holds a decoder of config {trained!r}; "
                             f"drop the option or set it to {trained}")
        return decoder_from(contents)

    def _check_sampling_options(self) -> None:
        steps, ensemble = self.options["ddim_steps"], self.options["ensemble"]
        if not 1 <= steps <= self.config.timesteps:
            raise UsageError(f"--option ddim_steps={steps}: must lie in 1..{self.config.timesteps} "
                             "(the decoder's DDPM steps)")
        if ensemble < 1:
            raise UsageError(f"--option ensemble={ensemble}: must be at least 1")

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        conditions = build_conditions(self.features, self.config, batch.query_images, batch.support_images,
                                      batch.support_masks, batch.support_annotation, batch.class_names)
        probability = self.sample(conditions, batch.episodes)
        return resize(probability[:, None], batch.query_images.shape[-2:])[:, 0].clamp(0, 1)

    def sample(self, conditions: Conditions, episodes: list[Episode]) -> torch.Tensor:
        """The ensemble's mean mask per episode as a foreground probability [B, M, M]."""
        count, size = self.options["ensemble"], self.config.mask_size
        prepared = self.decoder.prepare(conditions.repeat(count))
        noise = torch.cat([episode_noise(self.options["seed"], e, count, size) for e in episodes]).to(self.device)
        masks = self.diffusion.ddim_sample(lambda x, t: self.decoder(x, t, prepared).output, noise,
                                           self.options["ddim_steps"])
        return (masks.view(len(episodes), count, size, size).mean(dim=1) + 1) / 2
