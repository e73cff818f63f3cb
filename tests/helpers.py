"""Test helpers: free ports, waiting by polling, and real processes that are always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from shared.models import Trace

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll until predicate returns something truthy; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {message} (last error: {last_error})"
    )


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Proc:
    """A real process started for a test, with its output kept in a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = list(args)
        self.log_path = log_path
        full_env = {**os.environ, **(env or {})}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_http(self, url: str, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.args[0]} exited early:\n{self.output()[-3000:]}")
            return http_ok(url)

        try:
            wait_until(ready, timeout=timeout, message=url)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.output()[-3000:]}") from None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)


@contextlib.contextmanager
def running(
    args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[Proc]:
    proc = Proc(args, log_path, env)
    try:
        yield proc
    finally:
        proc.stop()


def herd_bin(name: str = "herd") -> str:
    return str(VENV_BIN / name)


def make_trace(node: str, model: str, **fields: Any) -> Trace:
    """A finished request's trace with plausible figures; `fields` override any of them."""
    values: dict[str, Any] = {
        "request_id": uuid.uuid4().hex, "model": model, "original_model": model,
        "node_id": node, "latency_ms": 300.0, "time_to_first_token_ms": 50.0,
        "prompt_tokens": 7, "completion_tokens": 11, "timestamp": time.time(),
    }
    values.update(fields)
    return Trace(**values)
