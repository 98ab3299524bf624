"""`fssbench report`: one self-contained, autoescaped HTML file, checked as a person sees it in headless
Chromium (Debian's `chromium`, driven by Playwright's Python API through the system browser's executable:
nothing is downloaded): it loads without console errors or network requests, every image decodes, and
the leaderboard table holds the runs' numbers."""

import re
import shutil

import pytest

from fssbench.cli.evaluate import EvalRequest, evaluate
from fssbench.cli.visual import build_report
from fssbench.harness.store import STORE_NAME, ResultsStore
from records_for_tests import make_record, with_changes

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str:
    found = next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)
    if found is None:
        pytest.skip(f"no Chromium installed (looked for {', '.join(CHROMIUM_NAMES)} on PATH; Debian: "
                    "apt-get install chromium): the report is not checked in a browser")
    return found


def images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_the_report_inlines_everything_and_escapes_what_records_say(tmp_path):
    hostile = with_changes(make_record("r-b", "beta", 0.7, compute_ms=300), variant="<script>alert(1)</script>")
    with ResultsStore(tmp_path / STORE_NAME) as store:
        for record in (make_record("r-a", "alpha", 0.5), hostile):
            store.save(record, None)
    html = build_report(tmp_path, None, 3, None)
    sources = images(html)
    assert len(sources) == 3  # the trade-off plot and each run's per-class IoU
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing outside the file
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Predictions were not saved" in html
    for record in (make_record("r-a", "alpha", 0.5), hostile):
        assert f"{record.mean_miou:.1f}" in html and record.sha256 in html
        assert all(digest in html for digest in record.manifests().values())


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, isolated_cache):
    """oracle and protonet on demo-1shot, all folds, first 2 episodes each, predictions saved."""
    out = tmp_path_factory.mktemp("report")
    records = [evaluate(EvalRequest(method=method, protocol="demo-1shot", out=out, device="cpu", episodes=2,
                                    save_predictions=True))[0] for method in ("oracle", "protonet")]
    return out, records


@pytest.mark.slow
def test_the_report_opens_in_headless_chromium_with_every_image_and_the_runs_numbers(demo_store, tmp_path):
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    out, records = demo_store
    report = tmp_path / "report.html"
    report.write_text(build_report(out, None, 2, None), encoding="utf-8")
    assert len(images(report.read_text())) == 1 + 3 * len(records)  # trade-off; classes, worst, best per run

    problems, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            decoded = page.eval_on_selector_all(
                "img", "images => images.map(image => [image.alt, image.complete && image.naturalWidth > 0])")
            rows = page.eval_on_selector_all(
                "table.leaderboard tbody tr", "rows => rows.map(row => [...row.cells].map(cell => cell.innerText))")
            title = page.title()
        finally:
            browser.close()
    assert problems == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert len(decoded) == 7 and all(ok for _, ok in decoded), decoded
    assert title.startswith("fssbench report")
    by_method = {row[0]: row for row in rows}
    assert set(by_method) == {"oracle", "protonet"}
    for record in records:
        cells = by_method[record.method]
        assert f"{record.mean_miou:.1f}" in cells
        for result in record.results:  # the fold columns, in fold order, follow the identity columns
            assert f"{result.metrics['miou']:.1f}" in cells
