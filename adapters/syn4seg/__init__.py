"""Syn4Seg (Make It Up: Fake Images, Real Gains in generalized FSS): synthetic novel-class images with
refined pseudo-labels as extra training data for a GFSS learner.

prompts.py  HDIG's prompt bank: candidate prompts (shipped templates or a user's file), deduplicated by
            the cosine similarity of the Stable Diffusion text encoder's pooled embedding (eq. 1)
refine.py   APE (APF, eqs. 2-4; APR, eqs. 5-7) and SABR (eq. 8) on label maps and feature maps
sam.py      SABR's box-prompt segmenter (SAM ViT-H from local weights, or a tiny random SAM for tests)
synthesis.py  the prompt banks and the images of each novel class from the synthesis layer's source
labels.py   the pseudo-labels of a run per stage (raw, APF, APR, SABR), cached, with their quality
training.py the final head on base data + the refined synthetic set, cached
adapter.py  `--method syn4seg`: the whole pipeline per DIaM run, each stage an option (docs/syn4seg.md)
"""
