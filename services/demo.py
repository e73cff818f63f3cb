"""`herd demo`: a whole simulated fleet in one command — router, three nodes, dashboard, load.

Every process it starts is its child with a parent-death signal, so the fleet goes away
with the demo whether it stops on Ctrl-C, SIGTERM, `--duration`, or is killed outright.

The router runs with an admin token (FLEET_ADMIN_TOKEN from the environment, else one
generated once and kept in the demo's data dir), and the background load sends it. The admin
token is the one credential that passes whatever the client keys and client_auth say, so
the load keeps flowing after someone tries `herd keys create`; inference itself stays open
until a key exists, so the README's curl and OpenAI snippets need no key. The dashboard,
started by the router, inherits the token; `herd keys` needs it exported (the banner says
how). A load that starts failing says so at once, with the reason (services/demo_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from services.demo_load import Load
from shared.children import die_with_parent
from shared.settings import Settings

__all__ = ["NODES", "Demo", "SimNode", "add_arguments", "admin_token", "banner", "run"]


@dataclass(frozen=True)
class SimNode:
    """One simulated GPU box: what `herd sim` is told to be."""

    name: str
    memory_gb: float
    models: tuple[str, ...]
    tokens_per_s: float
    num_parallel: int
    max_loaded_models: int
    cpu_cores: int
    disk_gb: float


# Three unlike machines, so routing has real choices: a big box with the large models, a
# mid-size one, and a small one that can only hold the small models. Loads take about a
# second per few GB: long enough to see cold loads in the charts, short enough not to bore.
# The big box may keep all four of its models loaded: with room for three it evicted one
# for another all the time, and Health reported it thrashing on every model it holds.
NODES = (
    SimNode("gpu-large", 48.0, ("llama3.1:8b", "qwen3:14b", "llama3.2:3b",
                                "nomic-embed-text"), 90.0, 4, 4, 32, 2000.0),
    SimNode("gpu-medium", 24.0, ("llama3.2:3b", "qwen3:8b", "llama3.1:8b",
                                 "nomic-embed-text"), 50.0, 4, 3, 16, 1000.0),
    SimNode("laptop", 10.0, ("llama3.2:3b", "llama3.2:1b", "nomic-embed-text"), 25.0, 2, 2,
            8, 500.0),
)

READY_TIMEOUT = 60.0  # seconds for the router and every node to come up
# In the demo's data dir: the generated admin token, owner-only. A file name, not a secret.
TOKEN_FILE = "admin-token"  # noqa: S105


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _python_module(module: str, *args: str) -> list[str]:
    # The same interpreter and package as this process, whatever is on PATH.
    return [sys.executable, "-m", module, *args]


def admin_token(data_dir: Path, given: str = "") -> str:
    """The demo router's admin token: `given` (FLEET_ADMIN_TOKEN), else the one this data
    dir keeps, else a new one written there (owner-only), so an exported token stays
    valid from one demo run to the next."""
    if given:
        return given
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept:
            return kept
    token = "herd-admin-" + secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Demo:
    """Starts the fleet, drives a gentle load, and stops everything it started."""

    def __init__(self, *, port: int, dashboard_port: int, data_dir: Path, load: bool,
                 duration: float | None, rate: float = 2.0, max_in_flight: int = 4,
                 token: str = "") -> None:
        self.token = token  # the router's admin token, the load's credential
        self.port = port
        self.dashboard_port = dashboard_port
        self.data_dir = data_dir
        self.load = load
        self.duration = duration
        self.router_url = f"http://127.0.0.1:{port}"
        self.traffic = Load(self.router_url, token=token, rate=rate,
                            max_in_flight=max_in_flight)
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self.failure = ""

    # --- processes
    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Child:
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"demo-{name}.log"
        handle: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - the child keeps it
        try:
            process = subprocess.Popen(
                list(args), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - the child has no threads yet
                env=None if env is None else {**os.environ, **env},
            )
        finally:
            handle.close()
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def start_fleet(self) -> None:
        self.spawn("router", _python_module(
            "services.cli", "--host", "127.0.0.1", "--port", str(self.port),
            "--dashboard-port", str(self.dashboard_port), "--data-dir", str(self.data_dir),
            "--no-mdns",
        ), env={"FLEET_ADMIN_TOKEN": self.token} if self.token else None)
        for index, node in enumerate(NODES):
            sim_port = _free_port()
            self.spawn(f"sim-{node.name}", _python_module(
                "services.cli", "sim", "--host", "127.0.0.1", "--port", str(sim_port),
                "--node-name", node.name, "--models", ",".join(node.models),
                "--memory-gb", str(node.memory_gb), "--tokens-per-s", str(node.tokens_per_s),
                "--num-parallel", str(node.num_parallel),
                "--max-loaded-models", str(node.max_loaded_models),
                "--cpu-cores", str(node.cpu_cores), "--disk-gb", str(node.disk_gb),
                "--load-seconds-per-gb", "0.3", "--load-base-seconds", "0.3",
                "--response-tokens", "16-80", "--seed", str(index + 1),
            ))
            # No --memory-gb or --num-parallel: the agent asks its simulator (/sim/node)
            # for the machine it models, as it would ask nothing of a real Ollama.
            self.spawn(f"node-{node.name}", _python_module(
                "services.node.cli", "--router-url", self.router_url,
                "--ollama-host", f"http://127.0.0.1:{sim_port}", "--node-id", node.name,
                "--no-mdns", "--data-dir", str(self.data_dir),
            ))

    def token_file(self) -> Path | None:
        """The file holding the admin token in use, if it came from one (not the env)."""
        path = self.data_dir / TOKEN_FILE
        with contextlib.suppress(OSError):
            if self.token and path.read_text().strip() == self.token:
                return path
        return None

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop_fleet(self, timeout: float = 10.0) -> None:
        """SIGTERM every child, agents first and the router (with Redis) last; then SIGKILL."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.terminate()
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    # --- readiness
    async def wait_ready(self, client: httpx.AsyncClient) -> bool:
        timeout = READY_TIMEOUT
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            dead = self.dead_child()
            if dead is not None:
                print(f"herd demo: {dead.name} exited early (code {dead.process.returncode}); "
                      f"its log {dead.log_path}:\n{dead.tail()}", file=sys.stderr)
                return False
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status = (await client.get(self.router_url + "/fleet/status")).json()
                if int(status["fleet"]["nodes_online"]) >= len(NODES):
                    return True
            await asyncio.sleep(0.25)
        if not self.stopping.is_set():
            print(f"herd demo: the fleet was not ready within {timeout:.0f} s; logs are in "
                  f"{self.data_dir / 'logs'}", file=sys.stderr)
        return False

    async def watch(self) -> None:
        """Stop when a child dies unexpectedly or the duration is over."""
        end = None if self.duration is None else time.monotonic() + self.duration
        while not self.stopping.is_set():
            dead = self.dead_child()
            if dead is not None:
                self.failure = f"{dead.name} stopped (code {dead.process.returncode})"
                print(f"herd demo: {self.failure}; stopping the demo. Last lines of "
                      f"{dead.log_path}:\n{dead.tail()}", file=sys.stderr)
                self.stopping.set()
                return
            if end is not None and time.monotonic() >= end:
                self.stopping.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        self.start_fleet()
        print(f"herd demo: starting a router, {len(NODES)} simulated nodes and the dashboard "
              f"(logs in {self.data_dir / 'logs'}) ...", flush=True)
        timeout = httpx.Timeout(120.0, connect=3.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            if not await self.wait_ready(client):
                return 0 if self.stopping.is_set() else 1
            print(banner(self.router_url, self.dashboard_port, self.load,
                         self.token_file()), flush=True)
            jobs = [asyncio.create_task(self.watch())]
            if self.load:
                jobs.append(asyncio.create_task(self.traffic.drive(client, self.stopping)))
            await self.stopping.wait()
            await asyncio.gather(*jobs, return_exceptions=True)
        count = self.traffic.sent
        sent = "1 request" if count == 1 else f"{count} requests"
        print(f"herd demo: stopping ({sent} sent, {self.traffic.failed} failed)", flush=True)
        return 1 if self.failure else 0


def banner(router_url: str, dashboard_port: int, load: bool,
           token_file: Path | None = None) -> str:
    models = sorted(set(itertools.chain.from_iterable(n.models for n in NODES)))
    lines = [
        "",
        "Herd demo is running — a simulated fleet, no GPU needed.",
        f"  dashboard:  http://localhost:{dashboard_port}   (also {router_url}/dashboard)",
        f"  router:     {router_url}   (Ollama and OpenAI APIs)",
        f"  nodes:      {', '.join(n.name for n in NODES)}",
        f"  models:     {', '.join(models)}",
        "  load:       " + ("a few requests per second in the background" if load else "off"),
        "",
        "Try it:",
        f"  curl -s {router_url}/api/chat -d '{{\"model\": \"llama3.2:3b\", "
        "\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"stream\": false}'",
        "",
        "  from openai import OpenAI",
        f"  client = OpenAI(base_url=\"{router_url}/v1\", api_key=\"not-needed\")",
        "  reply = client.chat.completions.create(model=\"llama3.2:3b\",",
        "      messages=[{\"role\": \"user\", \"content\": \"Hello!\"}])",
        "  print(reply.choices[0].message.content)",
        "",
        "Client keys and settings need the router's admin token; the background load sends",
        "it too, so it keeps flowing once a key closes inference to everyone else:",
    ]
    # The file's path, not the secret: the banner may end up in a log or a screenshot.
    if token_file is not None:
        lines.append(f'  export FLEET_ADMIN_TOKEN="$(cat {token_file})"')
    else:
        lines.append("  (your FLEET_ADMIN_TOKEN, which the demo's router was started with)")
    lines += [
        "  herd keys create chatbot",
        "",
        "Press Ctrl-C to stop every process the demo started.",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=11435,
                        help="Port of the demo's router (default 11435).")
    parser.add_argument("--dashboard-port", type=int, default=8501,
                        help="Port of the dashboard (default 8501).")
    parser.add_argument("--data-dir", default=None,
                        help="Where the demo keeps its Redis, logs and latency.db "
                             "(default: demo/ under the data dir, ~/.fleet-manager/demo).")
    parser.add_argument("--no-load", dest="load", action="store_false",
                        help="Do not send background requests.")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="Background requests per second, on average (default 2).")
    parser.add_argument("--duration", type=float, default=None,
                        help="Stop by itself after this many seconds (default: run until "
                             "Ctrl-C).")


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else \
        Settings.load().data_path / "demo"
    if args.rate <= 0 or (args.duration is not None and args.duration <= 0):
        print("herd demo: --rate and --duration must be positive", file=sys.stderr)
        return 2
    given = Settings.load().admin_token
    demo = Demo(port=args.port, dashboard_port=args.dashboard_port, data_dir=data_dir,
                load=args.load, duration=args.duration, rate=args.rate,
                token=admin_token(data_dir, given))
    try:
        return asyncio.run(demo.main())
    finally:
        demo.stop_fleet()
