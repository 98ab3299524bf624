"""`fssbench train diffup`, contributed to the CLI through the registry's command hook. Imports nothing
heavy until the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_diffup_command(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol whose dataset, folds and shot to train for."),
    fold: int = typer.Option(..., "--fold", help="Held-out fold: training uses the other folds' classes."),
    backbone: str = typer.Option("efficientnet-lite0", help="Frozen backbone (fssbench list backbones)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (atomically, every few steps)."),
    config: str = typer.Option("paper", help="paper (the paper's GPU-scale settings) or small (CPU, minutes)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps (default: the config's epochs)."),
    seed: int = typer.Option(0, help="Seed of the decoder's initial weights, batches and noise."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint at --out."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the datasets (default: $FSSBENCH_DATA)."),
    backbone_weights: Optional[Path] = typer.Option(None, help="The backbone's weights (none for efficientnet-lite*)."),
) -> None:
    """Train DiffUp's decoder episodically on a fold's base classes."""
    from rich.console import Console

    from fssbench import registry
    from fssbench.adapters.diffup.training import train_diffup
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.session import sigterm_interrupts

    spec = registry.protocols.get(protocol)
    spec.select_folds(str(fold))
    reader = registry.open_dataset(spec, data_root_from(data_root))
    try:
        with sigterm_interrupts():
            path = train_diffup(reader, fold, spec.folds, backbone, out, config=config, steps=steps, seed=seed,
                                device=device, resume=resume, shot=spec.shot, backbone_weights=backbone_weights)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"[yellow]interrupted[/yellow]: the last checkpoint is in {out}; "
                                   "continue with --resume")
        raise typer.Exit(130) from None
    print(f"checkpoint: {path}  (evaluate with --weights decoder={path})")
