"""The overhead benchmark for two versions of Herd, side by side in one run.

Checks out `--base` (a git revision) into a temporary worktree, then runs
benchmarks/overhead.py alternately from that tree and from this one, `--rounds` times each,
and prints the median of every figure per version. Alternating spreads a shared machine's
noise over both versions alike. Both versions run in this checkout's virtualenv: the
base's packages come first on PYTHONPATH.

`--variant NAME=ARGS` (repeatable) runs this tree once per variant in each round, with
ARGS added to overhead.py's command line (e.g. `--variant off= --variant on=--otel=on`):
several configurations of this version beside the base, in one run. `--base-variant` does the
same for the base (shown as `base NAME`), so a configuration is compared across versions.

Run: .venv/bin/python benchmarks/versions.py --base b8f63be [--rounds 3] [--requests 1000]
     [--variant off= --variant on=--otel=on] [--base-variant on=--otel=on]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What overhead.py prints, as (name, pattern); each pattern's group is the figure.
FIGURES = [
    ("added p50 ms", r"added latency\s+p50 ([+-][\d.]+) ms"),
    ("added p99 ms", r"added latency .* p99 ([+-][\d.]+) ms"),
    ("added TTFT ms", r"stream TTFT p50 .* added ([+-][\d.]+) ms"),
    ("c=32 ratio", r"ratio ([\d.]+)"),
    ("router CPU ms/req", r"router CPU\s+([\d.]+) ms"),
]


def run_once(tree: Path, requests: int, seconds: float,
             extra: list[str] | None = None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / "overhead.py"), "--requests", str(requests),
         "--seconds", str(seconds), *(extra or [])],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    ).stdout
    figures = {}
    for name, pattern in FIGURES:
        found = re.search(pattern, out)
        if found:
            figures[name] = float(found.group(1))
    if len(figures) != len(FIGURES):
        raise SystemExit(f"overhead.py from {tree} printed no figures:\n{out}")
    return figures


def _variants(specs: list[str]) -> dict[str, list[str]]:
    """NAME=ARGS specs -> {NAME: overhead.py arguments}."""
    variants: dict[str, list[str]] = {}
    for spec in specs:
        name, _, extra = spec.partition("=")
        variants[name] = extra.split()
    return variants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=ARGS: run this tree with these overhead.py arguments too")
    parser.add_argument("--base-variant", action="append", default=[],
                        help="NAME=ARGS: run the base with these arguments too")
    args = parser.parse_args()
    variants, base_variants = _variants(args.variant or ["this="]), _variants(args.base_variant)
    with tempfile.TemporaryDirectory(prefix="herd-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)
        print(f"base tree: {base}", flush=True)
        try:
            plan = [("base", base, []),
                    *((f"base {v}", base, extra) for v, extra in base_variants.items()),
                    *((v, ROOT, extra) for v, extra in variants.items())]
            runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in plan}
            for round_ in range(args.rounds):
                for label, tree, extra in plan:
                    runs[label].append(run_once(tree, args.requests, args.seconds, extra))
                    print(f"round {round_ + 1} {label}: {runs[label][-1]}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)
    labels = list(runs)
    print(f"\nmedians of {args.rounds} rounds (base = {args.base})")
    print(f"{'':<22} " + " ".join(f"{label:>10}" for label in labels))
    for name, _ in FIGURES:
        medians = [statistics.median(r[name] for r in runs[label]) for label in labels]
        print(f"{name:<22} " + " ".join(f"{m:>10.2f}" for m in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
