"""`herd check`: exit 0 when a router answers its health check, 1 when not (for containers)."""

from __future__ import annotations

import argparse
import sys

import httpx

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:11435",
                        help="The router to check (default http://127.0.0.1:11435).")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="Seconds to wait for the answer (default 3).")


def run(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/healthz"
    try:
        response = httpx.get(url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"herd check: {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"herd check: {url} answered {response.status_code}", file=sys.stderr)
        return 1
    print(f"herd check: {url} ok")
    return 0
