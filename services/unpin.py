"""`herd unpin MODEL`: the model's copies go back to the nodes' keep_alive (services/pin.py)."""

from __future__ import annotations

import argparse

from services.pin import add_unpin_arguments, run_unpin

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_unpin_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_unpin(args)
