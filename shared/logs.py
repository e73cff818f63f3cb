"""Logging: JSON lines to <data dir>/logs/<service>.jsonl, readable lines on the console."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["JsonFormatter", "setup_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
) | {"message", "asctime", "taskName"}

_encoder = msgspec.json.Encoder()


def _fallback(obj: Any) -> Any:
    return str(obj)


_lenient_encoder = msgspec.json.Encoder(enc_hook=_fallback)


class JsonFormatter(logging.Formatter):
    """`ts, level, logger, msg` plus the record's context fields, compact, one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(entry).decode()
        except (TypeError, msgspec.EncodeError):
            return _lenient_encoder.encode(entry).decode()


def setup_logging(
    data_dir: Path, service: str, level: str = "INFO", *, console: bool = True
) -> Path:
    """Route the root logger to the JSON file (rotated) and, at INFO and above, the console."""
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{service}.jsonl"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=20 * 1024 * 1024, backupCount=5, encoding="utf-8"
    )
    file_handler.setFormatter(JsonFormatter())
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(max(logging.INFO, root.level))
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        formatter.converter = time.localtime
        stream.setFormatter(formatter)
        root.addHandler(stream)
    # Per-request access lines would cost more than the proxying itself.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return path
