"""DiffUp (Chen et al., "No Re-Train, More Gain: Upgrading Backbones with Diffusion model for Pixel-Wise
and Weakly-Supervised Few-Shot Segmentation"): FSS as conditional diffusion over backbone-agnostic priors.

priors.py     BAFT (prototypes, cosine and affinity-enhanced priors) and UAPF (mean, variance, extras)
unet.py       UQDD: the denoising U-Net with SCM and DQM
diffusion.py  DDPM forward process and DDIM sampling
training.py   episodic training on a fold's base classes
commands.py   `fssbench train diffup` (contributed to the CLI through the registry's command hook)
adapter.py    the evaluation adapter (`--method diffup`), any backbone with any trained decoder

The backbone upgrade table (the paper's Table 5) is `fssbench upgrade`, for any method with a backbone.
"""
