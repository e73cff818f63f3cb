"""Runs the Streamlit dashboard: a child of `herd` that dies with it, or `herd dashboard`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from shared.children import die_with_parent, stop_process
from shared.settings import Settings

__all__ = [
    "APP_PATH",
    "DashboardProcess",
    "add_arguments",
    "dashboard_command",
    "dashboard_for",
    "router_url_for",
    "run",
]

log = logging.getLogger("herd.dashboard")

APP_PATH = Path(__file__).resolve().parent.parent / "streamlit_app" / "app.py"


def dashboard_command(router_url: str, port: int, *, host: str = "0.0.0.0") -> list[str]:
    """The streamlit command line: headless, no usage statistics, nothing fetched outside.

    The admin token never goes on it (any local user can read a command line): the app
    reads FLEET_ADMIN_TOKEN from its environment, like every other Herd process.
    """
    args = [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.port", str(port),
        "--server.address", host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # The code does not change under a running dashboard; watching it costs CPU.
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
        "--",
        "--router-url", router_url,
    ]
    return args


def router_url_for(settings: Settings) -> str:
    """How the dashboard beside this router reaches it: over loopback when it listens there."""
    host = settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


class DashboardProcess:
    """A streamlit child process; the kernel stops it if its parent dies, even by SIGKILL."""

    def __init__(
        self, args: Sequence[str], log_path: Path | None = None, admin_token: str = ""
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.admin_token = admin_token
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        output: IO[bytes] | int = subprocess.DEVNULL
        handle: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
            output = handle
        try:
            env = {**os.environ, "FLEET_ADMIN_TOKEN": self.admin_token}
            self.process = subprocess.Popen(
                self.args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads run yet in the child
            )
        finally:
            if handle is not None:
                handle.close()
        log.info("dashboard started", extra={"pid": self.process.pid})

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout)


@contextlib.contextmanager
def dashboard_for(settings: Settings) -> Iterator[DashboardProcess | None]:
    """Beside a router: the dashboard on settings.dashboard_port, unless it is switched off."""
    if not settings.dashboard_enabled:
        yield None
        return
    dashboard = DashboardProcess(
        dashboard_command(router_url_for(settings), settings.dashboard_port,
                          host=settings.host or "0.0.0.0"),
        settings.data_path / "logs" / "dashboard.log",
        admin_token=settings.admin_token,
    )
    try:
        dashboard.start()
    except OSError as exc:
        # The router is useful without its dashboard; say why and go on.
        log.error("could not start the dashboard: %s", exc)
        yield None
        return
    try:
        yield dashboard
    finally:
        dashboard.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router-url", default="http://localhost:11435",
                        help="The router whose API the dashboard reads "
                             "(default http://localhost:11435).")
    parser.add_argument("--port", type=int, default=8501,
                        help="Port the dashboard listens on (default 8501).")
    parser.add_argument("--host", default="0.0.0.0",
                        help="Address the dashboard listens on (default 0.0.0.0).")


def run(args: argparse.Namespace) -> int:
    # The admin token, if any, comes from FLEET_ADMIN_TOKEN in the environment.
    command = dashboard_command(args.router_url, args.port, host=args.host)
    print(f"herd dashboard: http://{'localhost' if args.host == '0.0.0.0' else args.host}:"
          f"{args.port} reading {args.router_url}", flush=True)
    # Alone, the dashboard is the process: replace this one, so signals reach streamlit.
    sys.stdout.flush()
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(command[0], command)  # noqa: S606 - a fixed argv, no shell
    return 0  # pragma: no cover - execv does not return
