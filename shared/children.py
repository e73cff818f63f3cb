"""Child processes Herd starts (embedded Redis, the dashboard, a demo's fleet): they die
with their parent, and stop politely before they are killed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

__all__ = ["die_with_parent", "stop_process"]


def die_with_parent() -> None:
    """Runs in the child before exec (`preexec_fn`): SIGTERM when the parent dies.

    On Linux the kernel sends it even when the parent is SIGKILLed (PR_SET_PDEATHSIG).
    The child also gets a process group of its own: a Ctrl-C on the terminal reaches only
    the parent, which stops its children in order.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(libc_name, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    os.setpgrp()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL; returns once it has exited."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
