"""Herd's version, read from the installed distribution."""

from __future__ import annotations

from importlib import metadata

__all__ = ["VERSION"]

try:
    VERSION = metadata.version("herd")
except metadata.PackageNotFoundError:  # running from a source tree without install
    VERSION = "0.0.0"
