"""JSON log lines: one object per line with ts, level, logger, msg and context fields."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shared.logs import setup_logging


def test_json_lines_with_context(tmp_path: Path) -> None:
    path = setup_logging(tmp_path, "herd", "INFO", console=False)
    try:
        log = logging.getLogger("herd.test")
        log.info("Context protection: stripped num_ctx", extra={"model": "m:1", "num_ctx": 4096})
        log.debug("not written at INFO")
        for handler in logging.getLogger().handlers:
            handler.flush()
        lines = path.read_text().splitlines()
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    assert path == tmp_path / "logs" / "herd.jsonl"
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "INFO"
    assert entry["logger"] == "herd.test"
    assert entry["msg"] == "Context protection: stripped num_ctx"
    assert entry["model"] == "m:1" and entry["num_ctx"] == 4096
    assert isinstance(entry["ts"], float)
