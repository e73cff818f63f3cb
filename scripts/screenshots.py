"""Capture a PNG of every dashboard page from a running `herd demo`, for docs/dashboard.md.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--warmup 150]

Drives Debian's /usr/bin/chromium through Playwright (no browser download). The demo runs
on its own default ports (11435, 8501) so the pictures show what a user of `herd demo`
sees; the script stops if something else holds them.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit_app.nav import PAGES  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
WIDTH = 1280
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers do: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--warmup", type=float, default=150.0,
                        help="Seconds of demo traffic before the first picture (Trends draws "
                             "complete minutes only: give it a few).")
    parser.add_argument("--port", type=int, default=11435, help="The demo router's port.")
    parser.add_argument("--dashboard-port", type=int, default=8501,
                        help="The demo dashboard's port.")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port, dash = args.port, args.dashboard_port
    busy = [p for p in (port, dash) if not port_free(p)]
    if busy:
        raise SystemExit(f"port(s) {busy} in use: stop what holds them or pass --port / "
                         "--dashboard-port")
    router = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        demo = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "demo", "--port", str(port),
             "--dashboard-port", str(dash), "--data-dir", tmp, "--rate", "3"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait(lambda: httpx.get(router + "/fleet/status").json()["fleet"]["nodes_online"] == 3,
                 120, "the demo fleet")
            wait(lambda: httpx.get(f"http://127.0.0.1:{dash}/_stcore/health").status_code == 200,
                 60, "the dashboard")
            # Stored benchmark runs for the Benchmarks page: two started there, then one of
            # two models from `herd bench` (the newest, so it is the run shown in detail).
            for model in ("llama3.2:3b", "qwen3:8b"):
                httpx.post(router + "/dashboard/api/benchmarks", timeout=10,
                           json={"model": model, "requests": 12, "concurrency": 3})
                wait(lambda: not httpx.get(router + "/dashboard/api/benchmarks").json()["active"],
                     120, "a benchmark run")
            subprocess.run([sys.executable, "-m", "services.cli", "bench", "--router-url", router,
                            "--model", "llama3.2:3b", "--model", "qwen3:8b", "--requests", "12",
                            "--concurrency", "3", "--json"],
                           cwd=ROOT, check=True, timeout=120, stdout=subprocess.DEVNULL)
            time.sleep(args.warmup)  # let traffic build up so the charts have something
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                for index, (file, title, _icon) in enumerate(PAGES):
                    # 1280 px wide: the width the browser test checks every page at.
                    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
                    path = "" if index == 0 else file.removesuffix(".py")
                    page.goto(f"http://127.0.0.1:{dash}/{path}")
                    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
                    page.wait_for_timeout(3000)  # charts draw after the first paint
                    # Streamlit scrolls its main block, not the document: a window as tall
                    # as the page shows all of it.
                    tall = page.evaluate(
                        "document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                    page.set_viewport_size({"width": WIDTH, "height": max(900, int(tall))})
                    page.wait_for_timeout(1500)
                    target = out / f"{file.removesuffix('.py')}.png"
                    page.screenshot(path=str(target))
                    page.close()
                    print(f"saved {target}")
                browser.close()
        finally:
            demo.send_signal(signal.SIGINT)
            demo.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
