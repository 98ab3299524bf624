"""DiffUp's settings: the paper's (GPU scale) and a small one that trains on the demo on a CPU in minutes.

The paper fixes the 128x128 mask in [-1, 1], DDPM with 250 steps for training, noise prediction
(eq. 8), Adam at 1e-4 and 400 epochs, and reports 4.2M trainable parameters; the U-Net widths below
give about that many. It does not give the backbone input size (400, HSNet's evaluation size, here),
the batch size, the loss weights (1 and 1 here), the 1-shot augmentations or the number of extra
priors: those are ours.

The small config departs from the paper to learn in a few hundred CPU steps: a 64x64 mask, a narrow
U-Net, learning rate 1e-3, backbone input 224, and x0 prediction. With noise prediction the loss
weighs errors of the clean mask by alpha_bar / (1 - alpha_bar), about 1e-4 at the noisiest steps, where
only the priors can tell the mask; such a short training then never learns to use them and sampling
from pure noise drifts. Predicting x0 weighs every step alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fssbench.harness.errors import UsageError

PRIOR_LAYERS = 3  # every backbone gives three feature layers; U-Net level l is conditioned on layer l


@dataclass(frozen=True)
class DiffUpConfig:
    name: str
    image_size: int  # side the query and supports are resized to before the backbone
    mask_size: int  # side of the diffused mask
    widths: tuple[int, int, int]  # U-Net channels at mask_size, mask_size/2 and mask_size/4
    blocks: int  # residual blocks per U-Net level
    embedding: int  # width of the time and IoU embeddings
    hidden: int  # channels of the modulation and quality convolutions
    timesteps: int  # DDPM steps of the forward process
    prediction: str  # what the U-Net outputs: "epsilon" (the noise, eq. 8) or "x0" (the clean mask)
    support_views: int  # 1-shot: the support and its augmentations, for UAPF's variance
    extra_priors: int  # individual priors passed on next to the mean and the variance
    batch_size: int
    learning_rate: float
    epochs: int  # default training length, in passes over the base classes' (image, class) pairs
    checkpoint_every: int  # training steps between checkpoints
    cache_features: bool  # training keeps the frozen backbone's features of every image view seen (small data)
    lambda_error: float  # weight of the error-map loss
    lambda_iou: float  # weight of the IoU loss

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffUpConfig":
        values = {field.name: data[field.name] for field in fields(cls)}
        values["widths"] = tuple(values["widths"])
        return cls(**values)


CONFIGS = {
    "paper": DiffUpConfig(
        name="paper", image_size=400, mask_size=128, widths=(32, 64, 128), blocks=2, embedding=192, hidden=64,
        timesteps=250, prediction="epsilon", support_views=4, extra_priors=2, batch_size=8, learning_rate=1e-4,
        epochs=400, checkpoint_every=1000, cache_features=False, lambda_error=1.0, lambda_iou=1.0),
    "small": DiffUpConfig(
        name="small", image_size=224, mask_size=64, widths=(16, 32, 64), blocks=1, embedding=64, hidden=16,
        timesteps=250, prediction="x0", support_views=2, extra_priors=2, batch_size=8, learning_rate=1e-3,
        epochs=40, checkpoint_every=100, cache_features=True, lambda_error=1.0, lambda_iou=1.0),
}


def resolve_config(config: str | DiffUpConfig) -> DiffUpConfig:
    if isinstance(config, DiffUpConfig):
        return config
    if config not in CONFIGS:
        raise UsageError(f"unknown DiffUp config {config!r}; choose one of: {', '.join(CONFIGS)}")
    return CONFIGS[config]
