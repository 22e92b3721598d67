"""index.html in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser is
downloaded): it renders, a table sorts on a header click, every image loads. A screenshot is kept as a test
artefact in tests/artifacts/ (or $HARNESS_TEST_ARTIFACTS)."""
import os
import shutil
from pathlib import Path

import pytest

from reports import grid, html, plots
from tests.reports import samples

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("HARNESS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")


def _open(index: Path):
    """A Chromium tab showing ``index`` (skips without Chromium or Playwright)."""
    if not CHROMIUM:
        pytest.skip("no chromium binary (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests = []
            tab.on("request", lambda req: requests.append(req.url))
            tab.goto(index.as_uri(), wait_until="load")
            tab.requests = requests
            yield tab
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    records = samples.leaderboard(tmp / "runs")
    index = html.render(records, tmp / "out", grids=grid.render(records, tmp / "out" / "grids", tile=64),
                        plots=plots.render(records, tmp / "out" / "plots"))
    yield from _open(index)


def test_offload_table_sorts_by_seconds_per_step(tmp_path):
    records = []
    for engine, dtype, bal in (("bf16", "bf16", 0.35), ("sdnq", "int8", 0.22), ("sdnq", "uint4", 0.3)):
        for mode, sps in (("balanced", bal), ("sequential", 2.5)):
            r = samples.record(engine, dtype, offload=mode, steps_per_s=1 / sps, peak=10.0)
            r["env"]["gpu_cap_gib"] = 16.0
            records.append(r)
    for tab in _open(html.render(records, tmp_path)):
        table = tab.locator("table.offload")
        header = table.locator("thead th", has_text="balanced: s/step")
        header.click()
        assert [c.split(" ")[0] for c in _column(tab, table, header.inner_text().strip())] == ["0.220", "0.300", "0.350"]
        header.click()
        assert _column(tab, table, "engine:dtype") == ["bf16:bf16", "sdnq:uint4", "sdnq:int8"]


def test_page_renders(page):
    assert page.title() == "Quantized diffusion leaderboard"
    assert page.locator("h2", has_text="flux-dev on NVIDIA H200").is_visible()
    assert page.locator("#synthetic-warning").is_visible()
    assert page.locator("table.leaderboard").count() == 2
    # Opened from disk it asks for nothing but itself (data: URIs are not network requests).
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []


def _column(page, table, header):
    idx = table.locator("thead th").all_inner_texts().index(header)
    return [row.locator("td").nth(idx).inner_text() for row in table.locator("tbody tr").all()]


def test_table_sorts_on_header_click(page):
    table = page.locator("table.leaderboard").first
    header = table.locator("thead th", has_text="PSNR dB")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    # Ascending by number, missing values ("-") last.
    assert _column(page, table, "PSNR dB") == ["22.00", "31.50", "-", "-"]
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _column(page, table, "PSNR dB") == ["31.50", "22.00", "-", "-"]
    table.locator("thead th", has_text="engine").first.click()
    assert _column(page, table, "engine") == ["bf16", "bnb", "torchao", "torchao"]


def test_images_load_and_screenshot_is_saved(page):
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 10 and all(done and width > 0 for done, width in sizes)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = ARTIFACTS / "index.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
