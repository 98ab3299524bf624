"""`fssbench train gfss-learner`, contributed to the CLI through the registry's command hook. Imports
nothing heavy until the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_gfss_learner_command(
    protocol: str = typer.Option(..., "--protocol", "-p", help="GFSS protocol whose dataset and folds to train for."),
    fold: int = typer.Option(..., "--fold", help="Held-out fold: training uses the other folds' (base) classes."),
    backbone: str = typer.Option("efficientnet-lite0", help="Frozen backbone (fssbench list backbones)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (atomically, every few steps); "
                                                "name it DIR/fold<F>.pt to evaluate all folds with --weights head=DIR."),
    steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps (default: the config's, 100)."),
    seed: int = typer.Option(0, help="Seed of the head's initial weights and of the batches."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint at --out."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the datasets (default: $FSSBENCH_DATA)."),
    backbone_weights: Optional[Path] = typer.Option(None, help="The backbone's weights (none for efficientnet-lite*)."),
) -> None:
    """Train the gfss-learner's head on a fold's base classes (DIaM's base training)."""
    from rich.console import Console

    from fssbench import registry
    from fssbench.adapters.gfss_learner.training import train_gfss_learner
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.errors import UsageError
    from fssbench.harness.session import sigterm_interrupts

    spec = registry.protocols.get(protocol)
    if spec.task != "gfss":
        raise UsageError(f"--protocol {protocol} is a {spec.task} protocol; gfss-learner trains for a GFSS protocol "
                         "(fssbench list protocols)")
    spec.select_folds(str(fold))
    reader = registry.open_dataset(spec, data_root_from(data_root))
    try:
        with sigterm_interrupts():
            path = train_gfss_learner(reader, fold, spec.folds, backbone, out, steps=steps, seed=seed, device=device,
                                      resume=resume, backbone_weights=backbone_weights)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"[yellow]interrupted[/yellow]: the last checkpoint is in {out}; "
                                   "continue with --resume")
        raise typer.Exit(130) from None
    print(f"checkpoint: {path}  (evaluate with --weights head={path}, or head=<its folder> for all folds)")
