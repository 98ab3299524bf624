"""AlignDiff (Qiu et al., ECCV 2024): synthetic support samples for any few-shot segmentation method.

- `inversion`: normalized masked textual inversion (Sec. 3.4, eq. 3): a learned adjective v*.
- `algorithm`: Algorithm 1, mask generation by few-shot conditioning (Sec. 3.5).
- `synthesizer`: per class, the samples of the synthesis layer's image source, with v* per support.
- `adapter`: `aligndiff+<X>` for any registered FSS method X (composed at registry lookup).
- `gfss`: synthetic novel-class (image, mask) samples for a generalized FSS training set.
"""
