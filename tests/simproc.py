"""Start real `herd sim` processes for tests, and talk to their /sim/* endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.helpers import Proc, free_port, herd_bin

__all__ = ["FAST", "SimProc", "sim_fault", "sim_reset", "sim_stats", "start_sim"]

# Flags that make a simulator quick enough for tests: near-instant loads and prompts.
FAST: dict[str, Any] = {"load_seconds_per_gb": 0.01, "load_base_seconds": 0.0,
                        "prompt_tps": 0, "pull_seconds_per_gb": 0.01}


class SimProc(Proc):
    """A running `herd sim`: `url` is its base URL, `port` its port, `name` its node name,
    `control_url` the URL of its --control-port (None without one)."""

    url: str
    port: int
    name: str
    control_url: str | None


def start_sim(tmp_path: Path, name: str, *, fast: bool = True, timeout: float = 20.0,
              **flags: Any) -> SimProc:
    """Start `herd sim --node-name name` on a free loopback port and wait until it answers.

    Flags are written as keyword arguments: `tokens_per_s=0` becomes `--tokens-per-s 0`,
    `models=["a", "b"]` becomes `--models a,b`, `fault="slow"` becomes `--fault slow`. With
    `fast` (the default) load and prompt times are tiny unless given. Stop it with
    `proc.stop()` (or use it in a fixture).
    """
    port = int(flags.pop("port", 0)) or free_port()
    options = {**(FAST if fast else {}), **flags}
    args = [herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(port), "--node-name", name]
    for key, value in options.items():
        if value is True:  # a switch: --flag
            args.append(f"--{key.replace('_', '-')}")
            continue
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        args += [f"--{key.replace('_', '-')}", text]
    proc = SimProc(args, tmp_path / f"sim-{name}-{port}.log")
    proc.url = f"http://127.0.0.1:{port}"
    proc.port = port
    proc.name = name
    control = options.get("control_port")
    proc.control_url = f"http://127.0.0.1:{control}" if control else None
    try:
        proc.wait_http(proc.url + "/api/version", timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def sim_stats(url: str) -> dict[str, Any]:
    """GET /sim/stats: counters ("total", "models"), "loaded", "last_requests", ..."""
    response = httpx.get(f"{url}/sim/stats", timeout=5.0)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def sim_fault(url: str, mode: str, **params: Any) -> dict[str, Any]:
    """POST /sim/fault, e.g. sim_fault(url, "error500", count=2, paths=["/api/chat"])."""
    response = httpx.post(f"{url}/sim/fault", json={"mode": mode, **params}, timeout=5.0)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def sim_reset(url: str, unload: bool = False) -> None:
    """POST /sim/reset: zero the counters (and with unload=True unload idle models)."""
    httpx.post(f"{url}/sim/reset", json={"unload": unload}, timeout=5.0).raise_for_status()
