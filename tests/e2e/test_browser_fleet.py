"""One real browser: headless Debian Chromium opens the dashboard through the router's link."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_dashboard_pages import LiveFleet, start_fleet
from tests.helpers import free_port, http_ok, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                       reason="needs Debian's chromium at /usr/bin/chromium "
                              "(apt-get install -y chromium); Playwright must not download one"),
]


@pytest.fixture(scope="module")
def dashboard_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveFleet, int]]:
    port = free_port()
    nodes = {"browser-node-1": ["--models", "llama3.2:3b"],
             "browser-node-2": ["--models", "qwen3:8b"]}
    with start_fleet(tmp_path_factory.mktemp("browser"), nodes, dashboard_port=port) as fleet:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), timeout=60,
                   message="the dashboard herd started")
        yield fleet, port


def test_fleet_overview_in_chromium_shows_node_names(
    dashboard_fleet: tuple[LiveFleet, int], tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    fleet, port = dashboard_fleet
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_FLAGS)
        try:
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
        finally:
            browser.close()


def test_an_event_reaches_the_open_page_without_a_reload(
    dashboard_fleet: tuple[LiveFleet, int], tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    fleet, port = dashboard_fleet
    # Statuses move within seconds here, so the agent's silence shows quickly.
    quick = httpx.post(fleet.url + "/dashboard/api/settings", timeout=10,
                       json={"heartbeat_timeout": 2.5, "heartbeat_offline": 4.0})
    assert quick.status_code == 200, quick.text
    agent = next(p for p in fleet.procs
                 if "herd-node" in p.args[0] and "browser-node-2" in p.args)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.get_by_text("Latest events").first.wait_for(timeout=45_000)
            page.get_by_text("browser-node-2").first.wait_for(timeout=45_000)
            health = browser.new_page(viewport={"width": 1400, "height": 1400})
            health.goto(f"http://127.0.0.1:{port}/health", wait_until="domcontentloaded")
            health.get_by_text("Health score").first.wait_for(timeout=45_000)
            # A mark in each page's own memory: a reload would wipe it.
            for open_page in (page, health):
                open_page.evaluate("window.__herdMark = 'still here'")
            agent.kill()  # the node falls silent: degraded, then offline
            page.get_by_text(re.compile(r"browser-node-2 \w+ → offline")).first.wait_for(
                timeout=30_000)
            health.get_by_text("Node browser-node-2 is offline").first.wait_for(timeout=30_000)
            for open_page in (page, health):
                assert open_page.evaluate("window.__herdMark") == "still here"
            page.screenshot(path=str(tmp_path / "event.png"), full_page=True)
        finally:
            browser.close()
