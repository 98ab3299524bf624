"""`fssbench upgrade`: one method evaluated with several backbones (ordinary, resumable runs in the store),
then the upgrade table of reports/upgrade.py as Markdown and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fssbench.cli.app import DATA_ROOT_OPTION, DEVICE_OPTION, OUT_OPTION, app, stderr, stdout


def parse_backbones(text: str) -> list[str]:
    from fssbench.harness.errors import UsageError

    backbones = [name.strip() for name in text.split(",") if name.strip()]
    if len(backbones) < 2:
        raise UsageError(f"--backbones {text!r}: give at least two backbones, comma-separated, the reference first "
                         "(e.g. efficientnet-lite0,efficientnet-lite2)")
    repeated = sorted({name for name in backbones if backbones.count(name) > 1})
    if repeated:
        raise UsageError(f"--backbones {text!r}: {', '.join(repeated)} is given twice")
    return backbones


def parse_backbone_weights(flags: list[str], backbones: list[str]) -> dict[str, str]:
    from fssbench.harness.errors import UsageError

    parsed: dict[str, str] = {}
    for flag in flags:
        backbone, sep, path = flag.partition("=")
        if not sep or not backbone or not path:
            raise UsageError(f"--backbone-weights {flag!r}: expected BACKBONE=PATH, e.g. resnet50=/models/rn50.pth")
        if backbone not in backbones:
            raise UsageError(f"--backbone-weights {flag!r}: {backbone} is not one of --backbones "
                             f"({', '.join(backbones)})")
        if backbone in parsed:
            raise UsageError(f"--backbone-weights {backbone}= is given twice")
        parsed[backbone] = path
    return parsed


@app.command("upgrade")
def upgrade_command(
    method: str = typer.Option(..., "--method", "-m", help="A method that takes a backbone (fssbench list methods)."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol (fssbench list protocols)."),
    backbones: str = typer.Option(..., "--backbones",
                                  help="Comma-separated backbones, the reference (e.g. the one trained with) first."),
    weights: list[str] = typer.Option([], "--weights",
                                      help="NAME=PATH kept fixed across backbones, e.g. decoder=CKPT; repeatable."),
    backbone_weights: list[str] = typer.Option([], "--backbone-weights",
                                               help="BACKBONE=PATH: that backbone's weights (passed as --weights "
                                                    "backbone=PATH to its run); repeatable."),
    fold: str = typer.Option("all", help="Fold number, or 'all'."),
    episodes: Optional[int] = typer.Option(None, min=1, help="Only the first N episodes per fold (recorded)."),
    options: list[str] = typer.Option([], "--option", help="NAME=VALUE of a method option; repeatable."),
    data_root: Optional[Path] = DATA_ROOT_OPTION,
    out: Path = OUT_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Evaluate one method with several backbones and write the upgrade table (Markdown and CSV): per fold
    and mean, each backbone's score and its delta against the first with a paired 95% interval."""
    from fssbench.cli.evaluate import EvalRequest, evaluate_with_progress, plan_run
    from fssbench.harness.errors import UsageError
    from fssbench.harness.files import atomic_write_text
    from fssbench.harness.weights import parse_weight_flags
    from fssbench.reports.upgrade import upgrade_csv, upgrade_markdown

    names = parse_backbones(backbones)
    per_backbone = parse_backbone_weights(backbone_weights, names)
    if "backbone" in parse_weight_flags(weights):
        raise UsageError("--weights backbone=...: a backbone's weights differ per backbone; give them with "
                         "--backbone-weights BACKBONE=PATH")
    requests = [EvalRequest(method=method, protocol=protocol, fold=fold, data_root=data_root, out=out, device=device,
                            episodes=episodes, options=options, backbone=backbone,
                            weights=[*weights, *([f"backbone={per_backbone[backbone]}"] if backbone in per_backbone
                                                 else [])])
                for backbone in names]
    for request in requests:  # every backbone's flags checked before the first run starts
        plan_run(request)
    records = []
    for request in requests:
        record, path = evaluate_with_progress(request, f"{method} {request.backbone} {protocol}")
        stderr.print(f"{request.backbone}: run record {path}")
        records.append(record)
    markdown = upgrade_markdown(records)
    stem = f"upgrade-{method}-{protocol}-{names[0]}-to-{names[-1]}"
    atomic_write_text(out / f"{stem}.md", markdown)
    atomic_write_text(out / f"{stem}.csv", upgrade_csv(records))
    stdout.print(markdown, highlight=False, markup=False)
    stdout.print(f"written: {out / stem}.md and .csv", highlight=False)
