"""iSAID-5i, as GF-SAM reads it (ANDYZAQ/GF-SAM, matcher/data/isaid.py; PROTOCOLS.md section 4).

15 aerial-image classes in 3 folds: fold i evaluates the 0-based classes 5i..5i+4 (GF-SAM's
DatasetISAID is a DatasetPASCAL with nfolds 3, nclass 15). Split lists are GF-SAM's
`matcher/data/splits/isaid/val/fold<i>.txt`, one `<patch name>__<1-based class>` line per (patch,
class) pair; the published lists have 3108, 3657 and 3298 lines. Each line is the query of one
episode (the `gfsam-list` sampler). Images are `iSAID_patches/val/images/<name>.png`, label maps
`iSAID_patches/val/semantic_png/<name>_instance_color_RGB.png` read as they are stored: one channel,
pixel = class id + 1, 255 = ignore (the PASCAL encoding GF-SAM's extract_ignore_idx expects).
Class names follow iSAID's category order (label values 1..15).
"""

from __future__ import annotations

from pathlib import Path

from fssbench.protocols.pascal import PairListDataset

CLASSES = ("ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
           "ground_track_field", "bridge", "large_vehicle", "small_vehicle", "helicopter",
           "swimming_pool", "roundabout", "soccer_ball_field", "plane", "harbor")
PATCHES = "remote_sensing/iSAID_patches/val"


class IsaidDataset(PairListDataset):
    name = "isaid"
    classes = CLASSES
    list_folder = "isaid"
    layout = ("  <data root>/\n"
              f"    {PATCHES}/images/<name>.png\n"
              f"    {PATCHES}/semantic_png/<name>_instance_color_RGB.png   (one channel: class id + 1, 255 = ignore)\n"
              "    splits/isaid/val/fold<i>.txt   (GF-SAM's matcher/data/splits/isaid: lines <name>__<class>)")

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"{PATCHES}/images/{image_id}.png", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        return self.inside_root(f"{PATCHES}/semantic_png/{image_id}_instance_color_RGB.png", f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"masks": f"{PATCHES}/semantic_png (class id + 1, 255 = ignore)"}
