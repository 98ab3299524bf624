"""The synthesis layer shared by AlignDiff and Syn4Seg: where synthetic (image, mask) samples come from,
where they are kept, and how good their masks are.

- `fssbench.harness.image_sources` (in the core, since sources live in adapters/ and protocols/): the
  `ImageSource` contract. A source makes one labelled sample from a `SampleRequest` (class,
  seed, prompt or learned embedding) and states its identity (name, weights hashes, settings), which keys
  the store. Built-in sources are registered in `fssbench.registry.sources`: `diffusers` (Stable Diffusion
  1.x/2.x from a local folder: `diffusers_source.py`), `sd3` (Stable Diffusion 3.x from a local folder:
  `sd3_source.py`; its CPU cost at full size: `sd3_timing.py`), `folder` (images a user generated
  elsewhere: `folder.py`) and `demo` (new composites of the demo's classes with true masks:
  `fssbench.protocols.demo_synthesis`).
- `store`: the content-addressed synthetic-set store on disk: every sample (and every learned embedding)
  is kept under the sha256 of its key; each file's sha256 is recorded and checked on read, so a damaged
  file is regenerated, never used.
- `attention`: cross-attention capture on a diffusers UNet and the coarse mask it gives.
- `quality`: mask quality (class-accumulated mIoU per stage against a source's true masks).
- `cost`: seconds spent per synthesis stage, reported apart from the segmenter's compute.
"""
