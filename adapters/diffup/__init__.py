"""DiffUp (Chen et al., "No Re-Train, More Gain: Upgrading Backbones with Diffusion model for Pixel-Wise
and Weakly-Supervised Few-Shot Segmentation"): FSS as conditional diffusion over backbone-agnostic priors.

priors.py   BAFT (prototypes, cosine and affinity-enhanced priors) and UAPF (mean, variance, extras)
unet.py     UQDD: the denoising U-Net with SCM and DQM
diffusion.py  DDPM forward process and DDIM sampling
training.py   episodic training on a fold's base classes (`fssbench train diffup`)
adapter.py    the evaluation adapter (`--method diffup`), any backbone with any trained decoder
upgrade.py    the paper's Table 5: one decoder, two backbones, before/after/delta
"""

from fssbench.adapters.diffup.adapter import DiffUpAdapter
from fssbench.adapters.diffup.training import train_diffup

__all__ = ["DiffUpAdapter", "train_diffup"]
