"""The dashboard's live view: the router's server-sent events (`/dashboard/events`),
followed by one thread per dashboard process, and the state they have shown so far."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import msgspec
import streamlit as st

from shared.schemas import ErrorAnswer, FleetEvent, FleetStatus
from streamlit_app.data import Config, Reply, _decode, _unreachable, _where, fleet_status

__all__ = ["LIVE_EVERY", "LiveFeed", "LiveView", "live", "live_fleet", "parse_sse"]

EVENTS_PATH = "/dashboard/events"
FEED_SIZE = 50  # events kept for the overview's feed, newest first
FEED_IDLE_S = 60.0  # a feed nobody has read for this long disconnects; a read restarts it
RECONNECT_S = 1.0
FIRST_WAIT_S = 3.0  # how long a page's first draw waits for the stream's first snapshot
# How often live tiles redraw from the feed's state (no request): a change shows on the page
# within this plus the router's 0.2 s watch interval.
LIVE_EVERY = 0.5
# The router sends a snapshot at least every 2 s, so a read silent for 10 s is a dead link.
STREAM_TIMEOUT = httpx.Timeout(5.0, connect=2.0, read=10.0)


@dataclass(frozen=True, slots=True)
class LiveView:
    """What the stream has said so far: the latest fleet snapshot and the newest events.

    `version` grows with every node status change and every event, so a page can re-read
    what it derives from them (health findings) only when something happened.
    """

    fleet: FleetEvent | None = None
    events: tuple[dict[str, Any], ...] = ()
    connected: bool = False
    error: str = ""
    version: int = 0
    received_at: float = 0.0


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) for each server-sent event in a stream of lines."""
    name = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment, e.g. a keep-alive
        field_name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field_name == "event":
            name = value
        elif field_name == "data":
            data.append(value)


_fleet_event = msgspec.json.Decoder(FleetEvent).decode


class LiveFeed:
    """Follows the router's `/dashboard/events` in a daemon thread and keeps its latest state.

    Pages read `view()` from their fragments several times a second without any HTTP:
    one connection per dashboard process carries every browser tab's updates.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._tried = threading.Event()  # set once the first connection attempt ended
        self._view = LiveView()
        self._events: deque[dict[str, Any]] = deque(maxlen=FEED_SIZE)
        self._thread: threading.Thread | None = None
        self._last_read = time.monotonic()

    def view(self, wait: float = 0.0) -> LiveView:
        """The latest state; with `wait`, block up to that long for the first snapshot."""
        with self._lock:
            self._last_read = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._tried.clear()
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="herd-dashboard-events")
                self._thread.start()
            current = self._view
        if wait > 0 and current.fleet is None:
            self._tried.wait(wait)
            with self._lock:
                current = self._view
        return current

    def _idle(self) -> bool:
        with self._lock:
            return time.monotonic() - self._last_read > FEED_IDLE_S

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._view = replace(self._view, **changes)

    def _run(self) -> None:
        while not self._idle():
            try:
                error = self._follow()
            except httpx.HTTPStatusError as exc:
                error = str(exc)  # the router's own words: e.g. its Redis does not answer
            except httpx.HTTPError as exc:
                error = _unreachable(self.cfg, exc).error
            except Exception as exc:  # noqa: BLE001 - a daemon thread must never die of it
                error = f"event stream failed: {type(exc).__name__}: {exc}"
            self._update(connected=False, error=error)
            self._tried.set()
            time.sleep(RECONNECT_S)

    def _follow(self) -> str:
        """Follow the stream until it ends; why it ended."""
        url = self.cfg.router_url + EVENTS_PATH
        with httpx.stream("GET", url, headers={**self.cfg.headers(), "Accept":
                                               "text/event-stream"},
                          timeout=STREAM_TIMEOUT) as response:
            if response.status_code != 200:
                response.read()
                raise httpx.HTTPStatusError(
                    _decode(response).error, request=response.request, response=response)
            self._update(connected=True, error="")
            for name, raw in parse_sse(response.iter_lines()):
                if name == "error":  # the router's last word: its Redis stopped answering
                    return _stream_error(raw)
                self._receive(name, raw)
                self._tried.set()
                if self._idle():
                    break
        return "the router ended the event stream"

    def _receive(self, name: str, raw: str) -> None:
        if name == "fleet":
            try:
                fleet = _fleet_event(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._update(error=f"the router's live snapshot is not what this dashboard "
                             f"reads ({exc}); are they the same version?")
                return
            with self._lock:
                view = self._view
                moved = fleet.reason != "periodic"
                self._view = replace(view, fleet=fleet, received_at=time.time(),
                                     version=view.version + int(moved))
            return
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return
        if not isinstance(body, dict):
            return
        with self._lock:
            view = self._view
            if name == "event" and body not in self._events:
                # A reconnection starts with the latest events again: keep each one once.
                self._events.appendleft(body)
                self._view = replace(view, events=tuple(self._events),
                                     version=view.version + 1)


def _stream_error(raw: str) -> str:
    """The message of the stream's last `error` event, `{"error": ...}`."""
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        return msgspec.json.decode(raw, type=ErrorAnswer).error
    return raw.strip() or "the router ended the event stream with an error"


@st.cache_resource(show_spinner=False, max_entries=8)
def _feed(url: str, token: str) -> LiveFeed:
    return LiveFeed(Config(url, token))


def live(wait: float = FIRST_WAIT_S) -> LiveView:
    """The live state of the router this dashboard follows (starting the feed if need be)."""
    return _feed(*_where()).view(wait)


def live_fleet() -> tuple[Reply[FleetStatus | FleetEvent], LiveView]:
    """The fleet as the stream last showed it; a plain read when the stream has nothing yet
    (the router is unreachable, or too old to stream), so the page still says why."""
    view = live()
    reply: Reply[FleetStatus | FleetEvent]
    if view.fleet is not None and view.connected:
        reply = Reply(view.fleet, "", 200)
    else:
        read = fleet_status()
        reply = Reply(read.data, read.error, read.status, read.extra, read.fleet_state)
    return reply, view
