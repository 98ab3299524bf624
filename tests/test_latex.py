"""Paper-ready leaderboards: LaTeX (booktabs, golden file), a choice of columns, the folds shown honestly,
the same GFSS headers in every format, and written files that end with a newline."""

import io
from pathlib import Path

import pandas as pd
import pytest

from fssbench.harness.errors import UsageError
from fssbench.harness.store import ResultsStore
from fssbench.reports.leaderboard import COLUMNS, build_tables, latex_escape, parse_columns, to_csv, to_latex, to_markdown
from records_for_tests import make_gfss_record, make_record, with_changes
from test_seeds import exact_run

GOLDEN = Path(__file__).parent / "golden"


def paper_records():
    return [
        *(exact_run(seed, quality) for seed, quality in ((0, 0.40), (1, 0.44), (2, 0.42))),
        with_changes(exact_run(0, 0.47, "ablation", method="gsm+protonet"), variant="max_iter=3 & 50%"),
        exact_run(0, 0.45, "older", method="gsm+protonet", finished="2026-01-01T00:00:00+00:00"),
        exact_run(0, 0.46, "newer", method="gsm+protonet", finished="2026-01-02T00:00:00+00:00"),
        make_gfss_record("gfss", "diam", 0.8, folds=(0,)),
    ]


def test_latex_matches_the_golden_file():
    assert to_latex(build_tables(paper_records())) == (GOLDEN / "leaderboard.tex").read_text()


def test_latex_is_booktabs_one_table_per_setting_with_escaped_names():
    text = to_latex(build_tables(paper_records()))
    assert text.count(r"\begin{tabular}") == 2 and text.endswith("\n")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(rule) == 2
    assert r"gsm+protonet [max\_iter=3 \& 50\%]" in text and r"42.0 $\pm$ 2.0" in text
    assert latex_escape(r"a_b#c$d{e}~f^g\h") == r"a\_b\#c\$d\{e\}\textasciitilde{}f\textasciicircum{}g\textbackslash{}h"
    assert "% gsm+protonet / toy-net / model:abababab, 1-shot: run newer; not shown: older (seed 0, older)" in text


def test_columns_choose_what_is_shown_and_unknown_ones_are_refused_with_the_list():
    tables = build_tables(paper_records()[:3])
    columns = parse_columns("method, miou,ci", tables)
    markdown = to_markdown(tables, columns)
    assert "| method | 1-shot mIoU | 95% CI |\n|---|---|---|\n| protonet | 42.0 ± 2.0 | [42.0, 42.0] |" in markdown
    assert "abababab" not in markdown.split("Runs")[0]
    latex = to_latex(tables, columns)
    assert "Method & mIoU & 95\\% CI \\\\\n\\midrule\nprotonet & 42.0 $\\pm$ 2.0 & [42.0, 42.0] \\\\" in latex
    frame = pd.read_csv(io.StringIO(to_csv(tables, columns)))
    assert list(frame.columns) == ["setting", "method", "timing_only", "shot", "resolution", "mean_miou",
                                   "mean_miou_std", "ci_low", "ci_high"]
    with pytest.raises(UsageError, match="unknown columns hashes, timing; choose among method, backbone"):
        parse_columns("method,hashes,timing", tables)
    assert parse_columns(None, tables) is None


def test_the_cli_help_names_every_column(cli):
    from fssbench.cli.results import COLUMNS_HELP

    assert [name for name in COLUMNS if name not in COLUMNS_HELP] == []
    assert cli("leaderboard", "--columns", "method,bogus", "--results", "nowhere").code == 2


def test_one_fold_is_never_called_a_mean():
    one_fold = make_record("f0", "protonet", 0.5, folds=(0,))
    [table] = build_tables([one_fold])
    assert table.title == "toy (fss), 400x400 (squash), mask supports, fold 0 only, seed 0"
    header = next(line for line in to_markdown([table]).splitlines() if line.startswith("| method"))
    assert header.startswith("| method | backbone | weights | 1-shot fold0 | 1-shot mIoU | 95% CI | FB-IoU |")
    assert "mean" not in header
    two = build_tables([make_record("f01", "protonet", 0.5, folds=(0, 1))])
    assert "folds 0-1" in two[0].title


def test_gfss_headers_are_the_same_in_markdown_latex_and_csv():
    tables = build_tables([make_gfss_record("g", "diam", 0.8)])
    header = next(line for line in to_markdown(tables).splitlines() if line.startswith("| method"))
    assert "| 1-shot base | novel | mean | harmonic | s/query |" in header
    latex_header = next(line for line in to_latex(tables).splitlines() if line.startswith("Method"))
    assert "& base & novel & mean & harmonic & s/query &" in latex_header
    columns = list(pd.read_csv(io.StringIO(to_csv(tables))).columns)
    names = ["base_miou", "novel_miou", "mean_miou", "harmonic_miou"]
    assert [name for name in columns if name in names] == names


@pytest.mark.parametrize("format", ["md", "csv", "latex"])
def test_written_leaderboards_end_with_a_newline(cli, tmp_path, format):
    with ResultsStore(tmp_path / "fssbench.sqlite") as store:
        for record in paper_records():
            store.save(record, [])
    target = tmp_path / f"board.{format}"
    result = cli("leaderboard", "--results", str(tmp_path), "--format", format, "--out", str(target))
    assert result.code == 0, result.stderr
    text = target.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    printed = cli("leaderboard", "--results", str(tmp_path), "--format", format)
    assert printed.stdout == text
