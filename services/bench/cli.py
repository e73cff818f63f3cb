"""`herd bench`: measure a fleet through its router, show the figures, store the run.

The run is stored where the dashboard's Benchmarks page shows it
(`POST /dashboard/api/benchmarks/runs`, with the admin token when the router has one).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import httpx
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.bench.results import BenchRun, Sample
from services.bench.runner import BenchConfig, Runner
from services.bench.tables import show
from shared.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router-url", default="http://127.0.0.1:11435",
                        help="The router to measure through (default http://127.0.0.1:11435).")
    parser.add_argument("--model", dest="models", action="append", required=True,
                        help="A model to ask for; repeat for several (requests alternate).")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--requests", type=int, default=None,
                       help="Send this many requests (default 20 unless --duration).")
    bound.add_argument("--duration", type=float, default=None,
                       help="Send requests for this many seconds instead.")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="Requests in flight at once (default 4).")
    parser.add_argument("--prompt-tokens", type=int, default=32,
                        help="About how many tokens each prompt has (default 32).")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="num_predict of each request (default 64).")
    parser.add_argument("--stream", action="store_true",
                        help="Stream the answers (TTFT is then measured by the client).")
    parser.add_argument("--json", action="store_true",
                        help="Print the run as JSON on stdout instead of tables.")
    parser.add_argument("--no-store", dest="store", action="store_false",
                        help="Do not store the run on the router for the dashboard.")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="Seconds one request may take (default 300).")


async def _measure(config: BenchConfig, console: Console, live: bool) -> BenchRun:
    if not live:
        return await Runner(config).execute()
    total = config.requests
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("benchmark", total=total, failed=0)

        def advance(sample: Sample) -> None:
            bar.update(task, advance=1, failed=runner.run.failed,
                       description=f"benchmark ({sample.node or 'no node'})")

        runner = Runner(config, on_sample=advance)
        if total is None:  # a duration: the bar shows the time, the count shows progress
            bar.update(task, total=None)
        return await runner.execute()


def _store(url: str, result: BenchRun, admin_token: str) -> str | None:
    headers = {"Content-Type": "application/json"}
    if admin_token:
        headers["Authorization"] = f"Bearer {admin_token}"
    try:
        answer = httpx.post(url.rstrip("/") + "/dashboard/api/benchmarks/runs",
                            content=msgspec.json.encode(result), headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return str(exc)
    return None if answer.status_code == 201 else f"HTTP {answer.status_code}: {answer.text}"


def run(args: argparse.Namespace) -> int:
    # The credentials come from the environment, never a flag: FLEET_CLIENT_TOKEN (or the
    # admin token, which inference accepts too) and FLEET_ADMIN_TOKEN to store the run.
    settings = Settings.load()
    try:
        config = BenchConfig(
            router_url=args.router_url, models=tuple(args.models),
            requests=20 if args.requests is None and args.duration is None else args.requests,
            duration_s=args.duration, concurrency=args.concurrency,
            prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens, stream=args.stream,
            client_token=settings.client_token or settings.admin_token, source="cli",
            timeout_s=args.timeout,
        )
    except ValueError as exc:
        print(f"herd bench: {exc}", file=sys.stderr)
        return 2
    errors = Console(stderr=True)
    live = errors.is_terminal or not args.json
    result = asyncio.run(_measure(config, errors, live))
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        out = Console()
        show(out if out.is_terminal else Console(width=160), result)  # a pipe: no cut names
    code = 0 if result.status == "completed" else 1
    if args.store:
        problem = _store(args.router_url, result, settings.admin_token)
        if problem:
            errors.print(f"herd bench: the run was not stored on the router: {problem}")
            code = code or 1
    return code
