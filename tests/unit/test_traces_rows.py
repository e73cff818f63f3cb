"""Pure mappings: a Trace to its latency.db row, counters parsing, trace stream decoding."""

from __future__ import annotations

import json

import msgspec

from services.recorder.recorder import _TRACE_COLUMNS, trace_row
from services.router.fleet.slots import parse_counters
from shared.models import TRACE_FIELD, Trace, TraceStatus, decode_trace


def test_trace_row_matches_compat_columns() -> None:
    trace = Trace(
        request_id="r1", model="qwen3:8b", original_model="", node_id="n1",
        status=TraceStatus.INCOMPLETE, scores_breakdown={"loaded": 40.0},
        excluded_nodes=["n0"], fallback_used=True, tags=["a", "b"], timestamp=123.5,
        time_to_first_token_ms=None, finish_reason="", estimated_tokens=42,
    )
    row = dict(zip(_TRACE_COLUMNS, trace_row(trace), strict=True))
    assert row["status"] == "incomplete"
    assert row["original_model"] == "qwen3:8b", "falls back to the served model"
    assert json.loads(row["scores_breakdown"]) == {"loaded": 40.0}
    assert json.loads(row["excluded_nodes"]) == ["n0"]
    assert json.loads(row["tags"]) == ["a", "b"]
    assert row["fallback_used"] == 1
    assert row["timestamp"] == 123.5
    assert row["time_to_first_token_ms"] is None
    assert row["finish_reason"] is None and row["error_message"] is None
    assert row["estimated_tokens"] == 42


def test_empty_lists_are_null_like_ollama_herd() -> None:
    row = dict(zip(_TRACE_COLUMNS, trace_row(Trace(request_id="r", model="m",
                                                   original_model="m")), strict=True))
    assert row["tags"] is None and row["excluded_nodes"] is None
    assert row["scores_breakdown"] is None
    assert row["timestamp"] > 1_600_000_000, "a missing timestamp becomes now"


def test_parse_counters_fills_missing_fields() -> None:
    assert parse_counters({"in_flight": "2", "done": "5"}) == {
        "pending": 0, "in_flight": 2, "done": 5, "failed": 0,
    }


def test_decode_trace_tolerates_foreign_entries() -> None:
    trace = Trace(request_id="r", model="m", original_model="m")
    encoded = msgspec.json.encode(trace).decode()
    decoded = decode_trace({TRACE_FIELD: encoded})
    assert decoded is not None and decoded.request_id == "r"
    assert decode_trace({"other": "x"}) is None
    assert decode_trace({TRACE_FIELD: "{not json"}) is None
    assert decode_trace({TRACE_FIELD: '{"model": "m"}'}) is None
