"""The HTML report: one self-contained file (`fssbench report --out report.html`) that opens from disk
in any browser with no network: every image is inlined as a data URI, the style sheet is inline, and
there is no script.

It holds the leaderboard tables exactly as `fssbench leaderboard` lays them out (reports/leaderboard.py
builds them; Markdown and this report only write them differently), the figures of reports/plots.py,
each run's worst and best episodes where its predictions were saved (reports/overlays.py), and each
run's provenance: weights and manifest hashes, protocol, dataset fingerprint, code and environment.
Rendered with Jinja2 (autoescaped) from templates/report.html.j2.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from fssbench.harness.extras import require
from fssbench.harness.record import RunRecord
from fssbench.reports import leaderboard
from fssbench.reports.leaderboard import LeaderboardTable

HTML = leaderboard.Style("—", " ± ", lambda text: text)  # Jinja2 escapes every cell


@dataclass
class Image:
    """An image to inline, with its caption (also its alt text)."""

    caption: str
    content: bytes
    mime: str = "image/png"

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime};base64," + base64.b64encode(self.content).decode("ascii")


@dataclass
class RunSection:
    record: RunRecord
    figures: list[Image] = field(default_factory=list)  # per-class IoU, worst and best episodes
    notes: list[str] = field(default_factory=list)  # why a figure is missing


def table_view(table: LeaderboardTable) -> dict[str, Any]:
    """A leaderboard table as the template draws it: a header row of shots over the column labels."""
    identity, columns, rows = leaderboard._grid(table, None, HTML)
    shots = [(shot, sum(1 for column in columns if column.shot == shot)) for shot in table.shots]
    return {"title": table.title, "identity": identity, "shots": [(shot, width) for shot, width in shots if width],
            "labels": [column.label for column in columns], "rows": rows, "notes": leaderboard.notes(table)}


def provenance(record: RunRecord) -> list[tuple[str, str]]:
    """What a run ran, as (field, value) pairs."""
    weights = (["random-init (timing only)"] if record.weights == "random-init" else
               [f"{name}: {digest}" for name, digest in sorted(record.weights.items())] or ["none"])
    pairs = [("run id", record.run_id), ("status", record.status), ("record sha256", record.sha256 or "unsealed"),
             ("method", leaderboard.method_label(record)), ("backbone", record.backbone or "-"),
             ("options", ", ".join(f"{k}={v}" for k, v in sorted(record.options.items())) or "defaults"),
             ("weights sha256", "\n".join(weights)),
             ("code", ", ".join(f"{k}: {v}" for k, v in sorted(record.code.items())) or "-"),
             ("protocol", f"{record.protocol} v{record.protocol_version} (sha256 {record.protocol_sha256})"),
             ("dataset", f"{record.dataset.name} at {record.dataset.root}"),
             ("dataset fingerprint", ", ".join(f"{k}: {v}" for k, v in sorted(record.dataset.fingerprint.items()))
              or "-"),
             ("manifests sha256", "\n".join(f"fold {fold}: {sha}" for fold, sha in sorted(record.manifests().items()))),
             ("shot, seed", f"{record.shot}-shot, seed {record.seed}"),
             ("evaluation resolution", record.evaluation_resolution),
             ("support annotation", record.support_annotation),
             ("episodes cap", str(record.episodes_cap) if record.episodes_cap else "none"),
             ("saved predictions", record.predictions or "not saved"),
             ("command", " ".join(record.command) or "-"),
             ("started, finished", f"{record.started_at}, {record.finished_at or '-'}")]
    return pairs


def environment(record: RunRecord) -> list[tuple[str, str]]:
    values = record.environment.model_dump(exclude={"packages"})
    return [(key, "-" if value is None else str(value)) for key, value in values.items()]


def render_report(tables: list[LeaderboardTable], plots: list[Image], runs: list[RunSection], results: str,
                  generated_at: str) -> str:
    jinja2 = require("jinja2", "the HTML report", "report")
    env = jinja2.Environment(loader=jinja2.PackageLoader("fssbench.reports", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("report.html.j2")
    return template.render(tables=[table_view(table) for table in tables],
                           legend=leaderboard._legend(tables) if tables else "", plots=plots,
                           runs=[{"record": run.record, "figures": run.figures, "notes": run.notes,
                                  "provenance": provenance(run.record), "environment": environment(run.record),
                                  "packages": sorted(run.record.environment.packages.items())} for run in runs],
                           results=results, generated_at=generated_at)
