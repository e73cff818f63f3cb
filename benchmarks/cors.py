"""What the CORS layer costs a request: the served ASGI app called in-process, without and
with FLEET_CORS_ORIGINS set, side by side in one run.

The layer only exists when origins are configured (with none, the served app is the same
object). With origins set, a request without an Origin header pays one scan of its
headers; this measures that scan against the same request to the bare app, with the
headers the `ollama` and `openai` clients send, and, for scale, a request from an allowed
origin (its answer gains the CORS headers). The inner app answers at once, so what is
measured is the layer alone. Rounds alternate, and the medians of the rounds are compared.
Run: .venv/bin/python benchmarks/cors.py [--calls 100000] [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.router.cors import with_cors  # noqa: E402

# What an SDK sends with /api/chat (the ollama client; the openai one sends more).
HEADERS = [(b"host", b"127.0.0.1:11435"), (b"accept-encoding", b"gzip, deflate"),
           (b"connection", b"keep-alive"), (b"content-type", b"application/json"),
           (b"accept", b"application/json"),
           (b"user-agent", b"ollama-python/0.6.3 (x86_64 linux) Python/3.11"),
           (b"authorization", b"Bearer sk-herd-0123456789abcdef"),
           (b"content-length", b"83")]
ORIGIN = (b"origin", b"https://chat.example.com")


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


async def _per_call_ns(app: Callable[..., Any], headers: list[tuple[bytes, bytes]],
                       calls: int) -> float:
    scope = {"type": "http", "method": "POST", "path": "/api/chat", "headers": headers}
    started = time.perf_counter_ns()
    for _ in range(calls):
        await app(scope, _receive, _send)
    return (time.perf_counter_ns() - started) / calls


async def measure(calls: int, rounds: int) -> dict[str, Any]:
    layered = with_cors(_inner, ["https://chat.example.com", "http://localhost:*"])
    cases = {
        "bare app": (_inner, HEADERS),
        "CORS on, no Origin": (layered, HEADERS),
        "CORS on, allowed Origin": (layered, [*HEADERS, ORIGIN]),
    }
    found: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (app, headers) in cases.items():
            found[name].append(await _per_call_ns(app, headers, calls))
    medians = {name: statistics.median(values) for name, values in found.items()}
    base = medians["bare app"]
    return {"calls": calls, "rounds": rounds, "median_ns": medians,
            "added_ns": {name: value - base for name, value in medians.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(measure(args.calls, args.rounds))
    print(f"{'case':<26} {'median ns/call':>15} {'added ns':>10}")
    for name, value in result["median_ns"].items():
        print(f"{name:<26} {value:>15.0f} {result['added_ns'][name]:>10.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
