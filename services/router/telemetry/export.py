"""Spans leave in batches, from a thread of their own, through the SDK's OTLP/HTTP client.

The request path only appends a finished request's span records to a queue (`put`: a deque
append, no lock). A thread wakes every OTEL_BSP_SCHEDULE_DELAY ms, or as soon as a batch
(OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans) is queued, encodes batches a few spans at a time with a
short sleep between (the sleep hands the interpreter back to the event loop, which would
otherwise wait up to its 5 ms switch interval), and posts each with the OTLP/HTTP exporter's
client: OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and _CERTIFICATE apply, with its
retries. A queue holding OTEL_BSP_MAX_QUEUE_SIZE spans drops what does not fit.

A collector that cannot be reached loses spans, never requests, and the log says so once per
outage (with the SDK's reason), then once when it takes spans again; the SDK's own loggers,
which would say it per batch, are kept quiet meanwhile.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from services.router.telemetry.otlp import SpanRecord, encode_resource_spans

__all__ = ["Batches"]

log = logging.getLogger("herd.telemetry")

# The SDK's loggers: what they would say per batch (an export failed) is said once here.
_QUIET = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
          "opentelemetry.exporter.otlp.proto.http._common")
PIECE_SPANS = 16  # encoded in one go: ~0.2 ms of the interpreter
PIECE_PAUSE_S = 0.0002


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class _Reasons(logging.Filter):
    """Keeps the SDK's last words about an export instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        self.last = record.getMessage()
        return False


class Batches:
    """The queue of finished spans and the thread that sends them to `endpoint`."""

    def __init__(self, endpoint: str, resource: bytes, scope: bytes) -> None:
        self.endpoint = endpoint
        self.resource, self.scope = resource, scope
        self.delay_s = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.queue: collections.deque[SpanRecord] = collections.deque()
        self.dropped = 0
        self.next_drop_note = 0.0
        self.down = False
        self.closing = False
        self.wake = threading.Event()
        self.reasons = _Reasons()
        self.exporter = OTLPSpanExporter(endpoint=endpoint)
        # posts serialized requests, with its retries (constraints.txt pins the SDK it is in)
        client = getattr(self.exporter, "_client", None)
        if client is None:
            raise ImportError("this opentelemetry-exporter-otlp-proto-http has no OTLP/HTTP "
                              "client to send serialized spans with (constraints.txt)")
        self.client = client
        for name in _QUIET:
            logging.getLogger(name).addFilter(self.reasons)
        self.thread = threading.Thread(target=self._run, name="herd-otlp", daemon=True)
        self.thread.start()

    def put(self, records: Sequence[SpanRecord]) -> None:
        """A finished request's spans (from the event loop)."""
        queue = self.queue
        if len(queue) + len(records) > self.max_queue:
            self.dropped += len(records)  # said with the next export
            return
        queue.extend(records)
        if len(queue) >= self.batch and not self.wake.is_set():
            self.wake.set()

    def _run(self) -> None:
        while not self.closing:
            self.wake.wait(self.delay_s)
            self.wake.clear()
            self._send_all()

    def _send_all(self) -> None:
        queue = self.queue
        while queue and not (self.closing and self.down):
            records = [queue.popleft() for _ in range(min(len(queue), self.batch))]
            self._send(records)

    def _send(self, records: list[SpanRecord]) -> None:
        try:
            pieces = []
            for start in range(0, len(records), PIECE_SPANS):
                pieces.append(encode_resource_spans(self.resource, self.scope,
                                                    records[start:start + PIECE_SPANS]))
                time.sleep(PIECE_PAUSE_S)
            ok = bool(self.client.export(b"".join(pieces)).success)
        except Exception as exc:  # noqa: BLE001 - the thread lives on; these spans are lost
            ok, self.reasons.last = False, str(exc) or type(exc).__name__
        if ok:
            if self.down:
                self.down = False
                log.info("the OpenTelemetry collector takes spans again",
                         extra={"endpoint": self.endpoint})
        elif not self.down and not self.closing:
            self.down = True
            log.warning("cannot export spans to the OpenTelemetry collector: spans are "
                        "dropped until it answers (requests are not affected)",
                        extra={"endpoint": self.endpoint, "error": self.reasons.last})
        if self.dropped:  # expected while the collector is down; else said once a minute
            dropped, self.dropped = self.dropped, 0
            if not self.down and time.monotonic() >= self.next_drop_note:
                self.next_drop_note = time.monotonic() + 60
                log.warning("spans dropped: the export queue was full",
                            extra={"spans": dropped, "max_queue": self.max_queue})

    def close(self) -> None:
        """Send what is queued (not to a collector known to be down: its retries are cut
        short) and stop the thread. Blocking: called off the event loop."""
        self.closing = True
        if self.down:
            self.exporter.shutdown()  # type: ignore[no-untyped-call]
        self.wake.set()
        self.thread.join()
        if not self.down:
            self._send_all()
            self.exporter.shutdown()  # type: ignore[no-untyped-call]
        for name in _QUIET:
            logging.getLogger(name).removeFilter(self.reasons)
