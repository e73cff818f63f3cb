"""OpenTelemetry traces of the request path: off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Off, nothing of OpenTelemetry is imported and the request path pays one `is None` check per
hook (`RouterContext.tracing` is None, and so is each request's `spans`). On, `spans.py`
builds a tracer over the OTLP/HTTP exporter of the `herd[otel]` extra: one span per request
in the GenAI semantic conventions, a child for the queue wait and one per node call, and
the node call's context forwarded to the node as its `traceparent`.
"""

from __future__ import annotations

import contextlib
import logging
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
    try:
        from services.router.telemetry.spans import Tracing
    except ImportError as exc:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
                    "(pip install 'herd[otel]'): requests are not traced",
                    extra={"error": str(exc)})
        yield None
        return
    tracer = Tracing(settings.otel_endpoint, replica_id)
    log.info("tracing requests", extra={"endpoint": tracer.endpoint})
    try:
        yield tracer
    finally:
        await tracer.close()
