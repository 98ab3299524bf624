"""Pictures of results: `plot tradeoff|classes|upgrade|seeds`, `show` (a run's episodes with their saved
predictions) and `report` (one self-contained HTML file). matplotlib and Jinja2 come with the `report`
extra and are imported when these commands run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from fssbench import registry
from fssbench.cli.app import DATA_ROOT_HELP, RESULTS_OPTION, app, groups, open_store, stderr
from fssbench.cli.results import load_run

plot_app = groups["plot"]
PROTOCOL_OPTION = typer.Option([], "--protocol", help="Only these protocols; repeatable.")
REPORT_DPI = 110  # screen resolution, and episode grids (photographs) as JPEG, keep the report small


def _out_option(default: str) -> Any:
    return typer.Option(None, "--out", help=f"Where to write, without suffix: .png and .svg are written "
                                            f"(default: <results>/plots/{default}).")


def _save(plot, stem: Path) -> None:
    for path in plot.save(stem):
        stderr.print(f"written: {path}", highlight=False)


def _stored_records(results: Path):
    with open_store(results) as store:
        return store.records()


@plot_app.command("tradeoff")
def plot_tradeoff(protocol: list[str] = PROTOCOL_OPTION, out: Optional[Path] = _out_option("tradeoff"),
                  results: Path = RESULTS_OPTION) -> None:
    """Mean mIoU (95% interval) vs s/episode, a marker per method/backbone, a panel per setting and shot."""
    from fssbench.reports.plots import tradeoff

    _save(tradeoff(_stored_records(results), protocol or None), out or results / "plots" / "tradeoff")


@plot_app.command("classes")
def plot_classes(run: str = typer.Argument(..., help="Run id (or a unique prefix) or a run record file."),
                 out: Optional[Path] = _out_option("classes-RUN"), results: Path = RESULTS_OPTION) -> None:
    """One run's per-class IoU, a panel per fold, sorted."""
    from fssbench.reports.plots import classes

    record = load_run(run, results)
    _save(classes(record), out or results / "plots" / f"classes-{record.run_id}")


@plot_app.command("upgrade")
def plot_upgrade(runs: list[str] = typer.Argument(..., help="Runs (ids, prefixes or record files) of one method "
                                                           "with different backbones, the reference first."),
                 out: Optional[Path] = _out_option("upgrade-METHOD-PROTOCOL"), results: Path = RESULTS_OPTION) -> None:
    """Deltas against the first run's backbone with paired 95% intervals, per fold and mean."""
    from fssbench.reports.plots import upgrade

    records = [load_run(run, results) for run in runs]
    _save(upgrade(records), out or results / "plots" / f"upgrade-{records[0].method}-{records[0].protocol}")


@plot_app.command("seeds")
def plot_seeds(protocol: list[str] = PROTOCOL_OPTION, out: Optional[Path] = _out_option("seeds"),
               results: Path = RESULTS_OPTION) -> None:
    """Each seed's mIoU and the mean +- std, for runs that differ only by their seed."""
    from fssbench.reports.plots import seeds

    records = [record for record in _stored_records(results) if not protocol or record.protocol in protocol]
    _save(seeds(records), out or results / "plots" / "seeds")


@dataclass
class RunData:
    """A run's episodes rebuilt from its protocol and data, checked against its record."""

    reader: Any
    loader: Any
    manifests: dict[int, Any]


def open_run_data(record, data_root: Path | None) -> RunData:
    """The run's dataset, manifests and episode loader; a DataError when the data is not what the run saw."""
    from fssbench.cli.evaluate import protocol_manifests
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.errors import DataError
    from fssbench.harness.loading import EpisodeLoader
    from fssbench.harness.specs import Resolution

    spec = registry.protocols.get(record.protocol)
    if record.resolution_override is not None:
        spec = replace(spec, resolution=Resolution(spec.resolution.mode, record.resolution_override))
    try:
        reader = registry.open_dataset(spec, data_root_from(data_root))
    except DataError as exc:
        raise DataError(f"run {record.run_id} read dataset {record.dataset.name!r} at {record.dataset.root}; "
                        f"showing its episodes needs that data: {exc}") from None
    if reader.fingerprint() != record.dataset.fingerprint:
        raise DataError(f"the dataset at {reader.root} is not the one run {record.run_id} was scored on (fingerprint "
                        f"{reader.fingerprint()} vs the record's {record.dataset.fingerprint})")
    recorded = record.manifests()
    manifests = protocol_manifests(spec, reader, list(recorded), record.seed, record.episodes_cap)
    for fold, sha256 in recorded.items():
        if manifests[fold].sha256 != sha256:
            raise DataError(f"fold {fold}'s episodes rebuilt from {reader.root} (manifest {manifests[fold].sha256[:12]}) "
                            f"are not run {record.run_id}'s (manifest {sha256[:12]})")
    loader = EpisodeLoader(reader, spec.resolution.size, record.support_annotation, record.seed, False,
                           spec.resolution.mode)
    return RunData(reader, loader, manifests)


def episode_views(record, items, results: Path, data_root: Path | None):
    """The views of the record's episodes `items` (overlays.EpisodeIou), with their saved predictions."""
    from fssbench.harness.errors import DataError, UsageError
    from fssbench.harness.fss import load_episode
    from fssbench.harness.predictions import read_prediction
    from fssbench.reports.overlays import episode_view

    if record.predictions is None:
        raise UsageError(f"run {record.run_id} did not save its predictions; evaluate again with --save-predictions "
                         "(and --no-resume, or the finished run's journal is reused and nothing is predicted)")
    folder = results / record.predictions
    if not folder.is_dir():
        raise DataError(f"run {record.run_id}'s saved predictions are not in {folder}; point --results at the --out "
                        "folder of its `fssbench eval`")
    data = open_run_data(record, data_root)
    views = []
    for item in items:
        episode = next(episode for episode in data.manifests[item.fold].episodes if episode.index == item.index)
        views.append(episode_view(record, item, load_episode(data.loader, episode),
                                  read_prediction(folder, item.fold, item.index), data.reader.class_names[item.class_id]))
    return views


@app.command("show")
def show_command(
    run: str = typer.Argument(..., help="Run id (or a unique prefix) or a run record file."),
    episode: Optional[int] = typer.Option(None, "--episode", min=0, help="This episode (index within its fold)."),
    fold: Optional[int] = typer.Option(None, "--fold", help="The fold of --episode (needed when the run has several)."),
    worst: int = typer.Option(0, "--worst", min=0, help="The K episodes with the lowest IoU."),
    best: int = typer.Option(0, "--best", min=0, help="The K episodes with the highest IoU."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: <results>/plots/<run>-....png)."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    results: Path = RESULTS_OPTION,
) -> None:
    """Draw episodes of a run saved with --save-predictions: supports with their masks, the query with the
    ground truth and with the prediction, as a PNG grid."""
    from fssbench.harness.errors import UsageError
    from fssbench.reports.overlays import find_episode, pick_episodes, render

    if (episode is not None) == bool(worst or best):
        raise UsageError("give --episode N (with --fold F), or --worst K and/or --best K")
    record = load_run(run, results)
    if episode is not None:
        items, name = [find_episode(record, fold, episode)], None
    else:
        items = pick_episodes(record, worst, best)
        name = "-".join(part for part in (f"worst{worst}" if worst else "", f"best{best}" if best else "") if part)
    if not items:
        raise UsageError(f"run {record.run_id} has no scored episodes")
    name = name or f"fold{items[0].fold}-episode{items[0].index}"
    plot = render(episode_views(record, items, results, data_root), f"{record.method} on {record.protocol}")
    path = out or results / "plots" / f"{record.run_id}-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plot.encode("png"))
    stderr.print(f"written: {path}", highlight=False)


@app.command("report")
def report_command(
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    protocol: list[str] = PROTOCOL_OPTION,
    episodes: int = typer.Option(3, "--episodes", min=0,
                                 help="Worst and best episodes drawn per run with saved predictions (0: none)."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    results: Path = RESULTS_OPTION,
) -> None:
    """One self-contained HTML file: leaderboard, figures, worst/best episodes and provenance of every run."""
    from fssbench.harness.files import atomic_write_text

    html = build_report(results, protocol or None, episodes, data_root)
    atomic_write_text(out, html)
    stderr.print(f"report written to {out} ({len(html.encode()) / 1e6:.2f} MB)", highlight=False)


def build_report(results: Path, protocols: list[str] | None, episodes: int, data_root: Path | None) -> str:
    from fssbench.harness.errors import FssbenchError, UsageError
    from fssbench.reports import plots
    from fssbench.reports.html import Image, RunSection, render_report
    from fssbench.reports.leaderboard import build_tables
    from fssbench.reports.overlays import pick_episodes, render

    records = [record for record in _stored_records(results) if not protocols or record.protocol in protocols]
    tables = build_tables(records)  # verifies every record first
    figures = []
    for caption, draw in (("Accuracy vs speed: mean mIoU with its 95% interval against s/episode (log scale)",
                           plots.tradeoff), ("Spread over seeds: each seed's mIoU, mean +- std", plots.seeds)):
        try:
            figures.append(Image(caption, draw(records).encode("png", REPORT_DPI)))
        except UsageError:  # nothing of the kind to draw (no timed scored runs, no runs differing by seed)
            continue
    sections = []
    for record in records:
        if record.status != "complete":
            continue
        section = RunSection(record)
        if not record.timing_only and record.task == "fss":
            section.figures.append(Image(f"Per-class IoU of {record.run_id}",
                                         plots.classes(record).encode("png", REPORT_DPI)))
        if record.predictions is None:
            section.notes.append("Predictions were not saved (fssbench eval --save-predictions), so no episodes are "
                                 "drawn.")
        elif episodes:
            for label, worst, best in (("worst", episodes, 0), ("best", 0, episodes)):
                try:
                    views = episode_views(record, pick_episodes(record, worst, best), results, data_root)
                except FssbenchError as exc:
                    section.notes.append(f"Episodes not drawn: {exc}")
                    break
                section.figures.append(Image(f"The {len(views)} {label} episodes by IoU of {record.run_id}",
                                             render(views).encode("jpeg", REPORT_DPI), "image/jpeg"))
        sections.append(section)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return render_report(tables, figures, sections, str(results), generated)
