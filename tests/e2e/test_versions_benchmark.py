"""Smoke test: benchmarks/versions.py runs the overhead benchmark for two versions, and
for two configurations of this one (tracing off and on)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_versions_prints_medians_for_the_base_and_each_variant() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "versions.py"), "--base", "HEAD",
         "--rounds", "1", "--requests", "20", "--seconds", "0.5",
         "--variant", "off=", "--variant", "on=--otel=on"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("medians of 1 rounds", 1)[1]
    assert re.search(r"^\s+base\s+off\s+on$", table, re.M), table
    for figure in ("added p50 ms", "c=32 ratio", "router CPU ms/req"):
        row = re.search(rf"^{re.escape(figure)}\s+(\S+)\s+(\S+)\s+(\S+)$", table, re.M)
        assert row is not None, table
        assert all(float(value) == float(value) for value in row.groups())  # numbers, not NaN
    # its temporary worktree is gone again
    base = re.search(r"^base tree: (\S+)$", done.stdout, re.M)
    assert base is not None, done.stdout
    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                            text=True, check=True).stdout
    assert base.group(1) not in listed and not Path(base.group(1)).exists()
