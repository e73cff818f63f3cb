"""A real browser: headless Debian Chromium opens the dashboard through the router's link,
reads every page at 1280 px wide, and sees a node go offline without a reload."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from streamlit_app import widgets
from streamlit_app.nav import PAGES
from tests.e2e.test_dashboard_pages import LiveFleet, start_fleet
from tests.helpers import free_port, herd_bin, http_ok, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
DATAFRAME = '[data-testid="stDataFrame"]'
# What each page is for, in the page: it must be drawn before the page is measured.
KEY_ELEMENTS = {
    "fleet": "text=browser-node-1",
    "trends": '[data-testid="stVegaLiteChart"], [data-testid="stAlertContentInfo"]',
    "models": DATAFRAME,
    "apps": DATAFRAME,
    "benchmarks": DATAFRAME,
    "health": '[role="meter"][aria-label="Health score"]',
    "recommendations": DATAFRAME,
    "settings": '[data-testid="stFormSubmitButton"]',
}
# Everything in the main block that reaches past the viewport's right edge, the main block's
# own horizontal scroll, each dataframe's inner scroll (columns beyond the page) and each
# metric whose value or label is cut to an ellipsis; and table headers that are raw field names.
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const main = document.querySelector('[data-testid="stMain"]');
  const label = e => (e.getAttribute('data-testid') || e.tagName.toLowerCase()) + ' '
                     + (e.innerText || '').slice(0, 40).replace(/\\s+/g, ' ');
  const beyond = [...main.querySelectorAll('*')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right > width + 1;
  }).map(label);
  const frames = [...main.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
    .filter(s => s.scrollWidth > s.clientWidth + 1)
    .map(s => `dataframe ${s.scrollWidth} px in ${s.clientWidth} px`);
  const metrics = [...main.querySelectorAll(
      '[data-testid="stMetricValue"] *, [data-testid="stMetricLabel"] *')]
    .filter(e => e.scrollWidth > e.clientWidth + 1).map(label);
  const raw = [...main.querySelectorAll('[role="columnheader"], th')]
    .map(e => e.textContent.trim()).filter(t => t.includes('_'));
  return {page: document.documentElement.scrollWidth - width,
          main: main.scrollWidth - main.clientWidth, beyond, frames, metrics, raw};
}"""
# The cells of every dataframe, from the grid's accessible table (the canvas has no text).
CELLS = """() => [...document.querySelectorAll('[data-testid^="glide-cell"]')]
  .map(e => e.textContent)"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                       reason="needs Debian's chromium at /usr/bin/chromium "
                              "(apt-get install -y chromium); Playwright must not download one"),
]


@pytest.fixture(scope="module")
def dashboard_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveFleet, int]]:
    port = free_port()
    # A large node, as in `herd demo`: its figures are the longest a card shows.
    nodes = {"browser-node-1": ["--models", "llama3.2:3b", "--memory-gb", "48"],
             "browser-node-2": ["--models", "qwen3:8b"]}
    with start_fleet(tmp_path_factory.mktemp("browser"), nodes, dashboard_port=port) as fleet:
        # Something on every page: tagged requests, and a stored run of two models.
        for index, model in enumerate(("llama3.2:3b", "qwen3:8b", "llama3.2:3b")):
            answer = httpx.post(fleet.url + "/api/generate", timeout=60,
                                headers={"X-Herd-Tags": f"browser-app-{index % 2}"},
                                json={"model": model, "prompt": "hi", "stream": False})
            assert answer.status_code == 200, answer.text
        bench = subprocess.run(
            [herd_bin(), "bench", "--router-url", fleet.url, "--model", "llama3.2:3b",
             "--model", "qwen3:8b", "--requests", "4", "--concurrency", "2",
             "--max-tokens", "8", "--json"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")})
        assert bench.returncode == 0, bench.stderr
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), timeout=60,
                   message="the dashboard herd started")
        yield fleet, port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module: each test opens its own pages in it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_fleet_overview_in_chromium_shows_node_names(
    dashboard_fleet: tuple[LiveFleet, int], browser: Browser, tmp_path: Path,
) -> None:
    fleet, port = dashboard_fleet
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # Through the router's /dashboard link, as an operator would arrive.
    page.goto(fleet.url + "/dashboard", wait_until="domcontentloaded")
    assert page.url.rstrip("/") == f"http://127.0.0.1:{port}"
    for node_id in ("browser-node-1", "browser-node-2"):
        page.get_by_text(node_id, exact=False).first.wait_for(timeout=45_000)
    body = page.inner_text("body")
    assert "Fleet Overview" in body
    assert "nodes online" in body.lower(), body
    page.screenshot(path=str(tmp_path / "fleet.png"))
    assert (tmp_path / "fleet.png").stat().st_size > 10_000
    page.close()


def open_page(browser: Browser, port: int, index: int) -> tuple[Page, str]:
    """Page `index` of the menu at 1280 x 800, once its key element is drawn."""
    file, title, _icon = PAGES[index]
    name = file.removesuffix(".py")
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"http://127.0.0.1:{port}/{'' if index == 0 else name}",
              wait_until="domcontentloaded")
    page.get_by_role("heading", name=title).first.wait_for(timeout=45_000)
    page.locator(KEY_ELEMENTS[name]).first.wait_for(timeout=45_000)
    for summary in page.locator('[data-testid="stExpander"] summary').all():
        summary.click()  # what is folded away must fit too
    if page.locator(DATAFRAME).count():
        page.locator(f"{DATAFRAME} .dvn-scroller").first.wait_for(timeout=20_000)
    page.wait_for_timeout(1500)  # charts and tables settle after their first paint
    return page, name


@pytest.mark.parametrize("index", range(len(PAGES)), ids=[p[0][:-3] for p in PAGES])
def test_every_page_fits_1280_px_and_draws_its_key_element(
    dashboard_fleet: tuple[LiveFleet, int], browser: Browser, tmp_path: Path, index: int,
) -> None:
    _fleet, port = dashboard_fleet
    page, name = open_page(browser, port, index)
    try:
        found: dict[str, Any] = page.evaluate(OVERFLOW)
        # A look for the developer: the whole page (Streamlit scrolls its main block, so a
        # tall viewport shows all of it at the same width).
        page.set_viewport_size({"width": VIEWPORT["width"], "height": 2400})
        page.screenshot(path=str(tmp_path / f"{name}.png"))
        assert found == {"page": 0, "main": 0, "beyond": [], "frames": [], "metrics": [],
                         "raw": []}, f"{name} at 1280 px: {json.dumps(found)} (see {tmp_path})"
        if name == "benchmarks":  # the two-model run names both models
            assert "llama3.2:3b, qwen3:8b" in page.evaluate(CELLS)
    finally:
        page.close()


def test_an_event_reaches_the_open_page_without_a_reload(
    dashboard_fleet: tuple[LiveFleet, int], browser: Browser, tmp_path: Path,
) -> None:
    fleet, port = dashboard_fleet
    # Statuses move within seconds here, so the agent's silence shows quickly.
    quick = httpx.post(fleet.url + "/dashboard/api/settings", timeout=10,
                       json={"heartbeat_timeout": 2.5, "heartbeat_offline": 4.0})
    assert quick.status_code == 200, quick.text
    agent = next(p for p in fleet.procs
                 if "herd-node" in p.args[0] and "browser-node-2" in p.args)
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
    page.get_by_text("Latest events").first.wait_for(timeout=45_000)
    page.get_by_text("browser-node-2").first.wait_for(timeout=45_000)
    health = browser.new_page(viewport={"width": 1400, "height": 1400})
    health.goto(f"http://127.0.0.1:{port}/health", wait_until="domcontentloaded")
    health.get_by_text("Health score").first.wait_for(timeout=45_000)
    # A mark in each page's own memory: a reload would wipe it.
    for open_page_ in (page, health):
        open_page_.evaluate("window.__herdMark = 'still here'")
    agent.kill()  # the node falls silent: degraded, then offline
    page.get_by_text(re.compile(r"browser-node-2 \w+ → offline")).first.wait_for(
        timeout=30_000)
    health.get_by_text("Node browser-node-2 is offline").first.wait_for(timeout=30_000)
    for open_page_ in (page, health):
        assert open_page_.evaluate("window.__herdMark") == "still here"
    # The score fell below "good": its number, word and meter all follow the new band.
    tile = health.locator('[data-testid="stMetric"]').first
    meter = health.locator('[role="meter"][aria-label="Health score"]')

    def drawn() -> dict[str, Any]:
        return {"score": int(tile.get_by_test_id("stMetricValue").inner_text().split("/")[0]),
                "word": tile.get_by_test_id("stMetricDelta").inner_text().strip(),
                "colour": meter.get_attribute("data-colour"),
                "fill": meter.locator("div").last.evaluate(
                    "e => getComputedStyle(e).backgroundColor")}

    def lower_and_consistent() -> bool:
        shown = drawn()
        band = widgets.health_band(shown["score"])
        return shown["score"] < 90 and shown == {
            "score": shown["score"], "word": band.word, "colour": band.colour,
            "fill": _rgb(widgets.COLOURS[band.colour])}

    # The tile redraws twice a second: read it until one drawing shows the lower score.
    wait_until(lower_and_consistent, timeout=20, message="the health tile below good")
    page.screenshot(path=str(tmp_path / "event.png"), full_page=True)
    health.screenshot(path=str(tmp_path / "health.png"), full_page=True)


def _rgb(hex_colour: str) -> str:
    red, green, blue = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"
