"""`python -m services.sim`: the same as `herd sim`, without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from services.sim.cli import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="herd sim",
                                     description="Run a simulated Ollama server.")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
