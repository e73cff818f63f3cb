"""OpenTelemetry traces of the request path: off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set
(and `OTEL_SDK_DISABLED` is not `true`).

Off, nothing of OpenTelemetry is imported and the request path pays one `is None` check per
hook (`RouterContext.tracing` is None, and so is each request's `spans`). On, `spans.py`
records one span per request in the GenAI semantic conventions, a child for the queue wait
and one per node call, and forwards the node call's context to the node as its
`traceparent`; `export.py` sends them in batches with the OTLP/HTTP client of the
`herd[otel]` extra, in the protobuf `otlp.py` writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from shared.settings import Settings

if TYPE_CHECKING:
    from services.router.telemetry.spans import RequestSpans, Tracing

__all__ = ["RequestSpans", "Tracing", "tracing"]

log = logging.getLogger("herd.telemetry")


@contextlib.asynccontextmanager
async def tracing(settings: Settings, replica_id: str) -> AsyncIterator[Tracing | None]:
    """The replica's tracer while the block runs (None when tracing is off, or when the
    extra is not installed: that is said once in the log), flushed and stopped at its end."""
    if not settings.otel_endpoint:
        yield None
        return
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        log.info("OTEL_SDK_DISABLED=true: requests are not traced")
        yield None
        return
    try:
        from services.router.telemetry.spans import Tracing

        tracer = Tracing(settings.otel_endpoint, replica_id)
    except ImportError as exc:  # the extra is missing, or of a version without its client
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
                    "as Herd needs it (pip install -c constraints.txt 'herd[otel]'): "
                    "requests are not traced", extra={"error": str(exc)})
        yield None
        return
    log.info("tracing requests", extra={"endpoint": tracer.endpoint})
    try:
        yield tracer
    finally:
        await tracer.close()
