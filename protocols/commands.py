"""`fssbench data prepare`, contributed to the CLI through the registry's command hook. Imports nothing
heavy until the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def prepare_data_command(
    dataset: str = typer.Argument(..., help="coco: COCO-20i masks and instance maps from the instances JSON."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the datasets (default: $FSSBENCH_DATA)."),
    split: str = typer.Option("val2014", help="val2014 or train2014."),
) -> None:
    """Write the mask files a dataset needs, once (COCO-20i from instances_<split>.json, with pycocotools)."""
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.errors import UsageError
    from fssbench.harness.progress import file_progress
    from fssbench.protocols.coco_prepare import prepare_coco_masks

    if dataset != "coco":
        raise UsageError(f"`fssbench data prepare` knows only 'coco', not {dataset!r}")
    root = data_root_from(data_root)
    if root is None or not root.is_dir():
        raise UsageError("pass --data-root DIR (or set FSSBENCH_DATA) to the folder that holds COCO2014/")
    with file_progress(f"preparing COCO {split} masks") as on_image:
        written = prepare_coco_masks(root, split, on_image)
    print(f"{written} label and instance maps written under {root / 'COCO2014'}")
