"""The dashboard's pure helpers: its arguments, safe access, formatting, table shaping."""

from __future__ import annotations

import httpx
import msgspec
import pandas as pd
import pytest

from services.dashboard import dashboard_command, router_url_for
from services.router.api.dashboard_link import dashboard_url
from shared.schemas import FleetEvent, FleetStatus, FleetSummary
from shared.settings import Settings
from streamlit_app import data, live, widgets
from streamlit_app.nav import PAGES


def test_config_from_script_arguments_ignores_foreign_ones() -> None:
    cfg = data.parse_config(["-q", "tests/x.py", "--router-url", "10.0.0.5:11435/", "--other"],
                            Settings.load(environ={"FLEET_ADMIN_TOKEN": "s3cret"}))
    assert cfg.router_url == "http://10.0.0.5:11435"
    assert cfg.headers() == {"Authorization": "Bearer s3cret"}
    default = data.parse_config([], Settings.load(environ={}))
    assert default.router_url == "http://localhost:11435"
    assert default.headers() == {}


@pytest.mark.parametrize(("body", "status", "expected"), [
    ({"error": "max_retries must be int"}, 400, "max_retries must be int (HTTP 400)"),
    ({"error": {"message": "bad key", "type": "invalid_request_error"}}, 400, "bad key (HTTP 400)"),
    ({"detail": "Not Found"}, 404, "Not Found (HTTP 404)"),
    ("<html>oops</html>", 502, "<html>oops</html> (HTTP 502)"),
    (None, 500, "the router answered HTTP 500"),
])
def test_error_messages_in_every_shape(body: object, status: int, expected: str) -> None:
    assert data.error_message(body, status) == expected


@pytest.mark.parametrize(("value", "unit", "expected"), [
    (None, "%", "—"), ("", "", "—"), (float("nan"), "", "—"), ([1], "", "—"),
    (1234, "", "1,234"), (12.345, "%", "12.3 %"), (True, "", "yes"), ("online", "", "online"),
])
def test_fmt_shows_a_dash_for_what_is_missing(value: object, unit: str, expected: str) -> None:
    assert data.fmt(value, unit) == expected


def test_time_frame_reads_epoch_seconds_and_keeps_numbers() -> None:
    rows = [{"hour": 1_700_003_600, "requests": 5, "model": "a"},
            {"hour": 1_700_000_000, "requests": 2, "model": "b"}]
    df = widgets.time_frame(rows)
    assert df is not None
    assert list(df.columns) == ["requests"]
    assert list(df["requests"]) == [2, 5]  # sorted by time
    assert isinstance(df.index, pd.DatetimeIndex)
    assert widgets.time_frame([{"requests": 1}]) is None
    assert widgets.time_frame([]) is None


def test_eight_pages_each_with_a_file() -> None:
    titles = [title for _file, title, _icon in PAGES]
    assert titles == ["Fleet Overview", "Trends", "Model Insights", "Apps", "Benchmarks",
                      "Health", "Recommendations", "Settings"]
    from services.dashboard import APP_PATH
    for file, _title, _icon in PAGES:
        assert (APP_PATH.parent / "app_pages" / file).is_file()


def test_streamlit_command_is_headless_and_sends_no_statistics() -> None:
    args = dashboard_command("http://127.0.0.1:11435", 8600)
    flags = dict(zip(args[args.index("run") + 2::2], args[args.index("run") + 3::2], strict=False))
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.headless"] == "true"
    assert flags["--server.port"] == "8600"
    tail = args[args.index("--") + 1:]
    assert tail == ["--router-url", "http://127.0.0.1:11435"]  # no secret on a command line


@pytest.mark.parametrize(("host", "expected"), [
    ("0.0.0.0", "http://127.0.0.1:11435"), ("127.0.0.1", "http://127.0.0.1:11435"),
    ("10.1.2.3", "http://10.1.2.3:11435"), ("::1", "http://[::1]:11435"),
])
def test_the_dashboard_reaches_its_router(host: str, expected: str) -> None:
    assert router_url_for(Settings.load(environ={}, host=host)) == expected


def test_dashboard_url_brackets_ipv6() -> None:
    assert dashboard_url("http", "::1", 8501) == "http://[::1]:8501/"
    assert dashboard_url("https", "herd.lan", 8501) == "https://herd.lan:8501/"


def test_per_minute_buckets_recent_traces() -> None:
    base = 1_700_000_020.0  # 40 s into a minute
    traces = [
        {"timestamp": base, "status": "completed", "latency_ms": 100.0,
         "prompt_tokens": 10, "completion_tokens": 5},
        {"timestamp": base + 10, "status": "failed", "latency_ms": 300.0},
        {"timestamp": base + 30, "status": "completed", "latency_ms": 200.0,
         "prompt_tokens": 1, "completion_tokens": 1},
        {"timestamp": "garbage"},
    ]
    df = widgets.per_minute(traces)
    assert df is not None
    assert list(df["requests"]) == [2, 1]
    assert list(df["errors"]) == [1, 0]
    assert list(df["avg_latency_ms"]) == [200.0, 200.0]
    assert list(df["tokens"]) == [15, 2]
    assert widgets.per_minute([]) is None


def test_trim_idle_drops_the_quiet_start() -> None:
    df = pd.DataFrame({"requests": [0, 0, 0, 4, 0, 7]})
    assert list(widgets.trim_idle(df)["requests"]) == [0, 4, 0, 7]
    assert len(widgets.trim_idle(pd.DataFrame({"requests": [0, 0]}))) == 1


def test_server_sent_events_are_parsed_by_name_and_data() -> None:
    lines = ["retry: 2000", "", "id: 1", "event: fleet", 'data: {"reason": "initial"}', "",
             ": keep-alive", "event: event", 'data: {"kind": "retry",', 'data: "x": 1}', "",
             'data: {"plain": true}', "", "event: unfinished", "data: {}"]
    assert list(live.parse_sse(iter(lines))) == [
        ("fleet", '{"reason": "initial"}'), ("event", '{"kind": "retry",\n"x": 1}'),
        ("message", '{"plain": true}')]


def test_event_lines_say_what_happened() -> None:
    ts = 1_700_000_000.0  # 22:13:20 UTC
    assert widgets.event_line({"kind": "node_status", "ts": ts, "node_id": "gpu-1",
                               "old": "online", "new": "offline"}) == \
        "`22:13:20` :red[:material/cancel:] **gpu-1** online → offline"
    retry = widgets.event_line({"kind": "retry", "ts": ts, "node_id": "gpu-2",
                                "model": "qwen3:8b", "reason": "HTTP 500"})
    assert "retry: `qwen3:8b` failed on **gpu-2** (HTTP 500)" in retry
    assert "1 zombie slot of `m` on **n** reaped" in widgets.event_line(
        {"kind": "zombie_reaped", "ts": ts, "node_id": "n", "model": "m", "count": 1})
    assert "`m` loaded on **n**" in widgets.event_line(
        {"kind": "model_loaded", "ts": ts, "node_id": "n", "model": "m"})
    assert widgets.event_line({"kind": "context_protection", "ts": ts,
                               "message": "stripped num_ctx"}).endswith("stripped num_ctx")
    short = widgets.event_line({"kind": "pin", "ts": ts, "model": "big:30b", "state": "short",
                                "reason": "0 of 2 loaded; no node has room"})
    assert ":orange[:material/warning:] pin `big:30b`: short (0 of 2 loaded; no node" in short
    started = widgets.event_line({"kind": "warm_copy", "ts": ts, "node_id": "n", "model": "m",
                                  "action": "queue", "stage": "started",
                                  "reason": "9 waiting"})
    assert "queue copy of `m` on **n**: started (9 waiting)" in started
    assert widgets.event_line({"kind": "new_kind", "a": 1}) == \
        "`—` :gray[:material/info:] new_kind: a=1"


def test_complete_only_holds_back_the_running_bucket() -> None:
    index = pd.to_datetime([0, 60, 120], unit="s", utc=True)
    df = pd.DataFrame({"requests": [5, 7, 1]}, index=index)
    done, partial = widgets.complete_only(df, 60, now=150.0)
    assert list(done["requests"]) == [5, 7]
    assert partial is not None and partial["requests"] == 1
    done, partial = widgets.complete_only(df, 60, now=180.0)  # the last minute just ended
    assert list(done["requests"]) == [5, 7, 1] and partial is None
    hours = pd.DataFrame({"requests": [3]}, index=pd.to_datetime([0], unit="s", utc=True))
    done, partial = widgets.complete_only(hours, 3600, now=1800.0)
    assert done.empty and partial is not None


def test_live_feed_keeps_each_event_once_and_counts_changes() -> None:
    feed = live.LiveFeed(data.Config("http://127.0.0.1:1"))  # never started: no thread
    retry = '{"kind": "retry", "ts": 1.5, "node_id": "a"}'

    def snapshot(reason: str) -> str:
        event = FleetEvent(reason=reason, fleet=FleetSummary(nodes_online=1), nodes=[],
                           queues={}, waiting={}, timestamp=1.0)
        return msgspec.json.encode(event).decode()

    feed._receive("fleet", snapshot("initial"))
    feed._receive("fleet", snapshot("periodic"))
    feed._receive("fleet", '{"reason": "periodic", "fleet": {"nodes_online": "one"}}')
    feed._receive("event", retry)
    feed._receive("event", retry)  # the backlog again, after a reconnection
    feed._receive("event", '{"kind": "node_status", "ts": 2.0, "node_id": "a"}')
    feed._receive("event", "not json")
    view = feed._view
    assert [e["kind"] for e in view.events] == ["node_status", "retry"]
    assert view.version == 1 + 2  # the initial snapshot and two distinct events
    assert view.fleet is not None and view.fleet.reason == "periodic"
    assert view.fleet.fleet.nodes_online == 1  # a snapshot of another shape is not taken
    assert "same version" in view.error


@pytest.mark.parametrize(("score", "colour", "word"), [
    (100, "green", "good"), (90, "green", "good"), (89, "orange", "fair"),
    (80, "orange", "fair"), (70, "orange", "fair"), (69, "red", "poor"), (0, "red", "poor"),
])
def test_health_bands_colour_a_full_score_green(score: int, colour: str, word: str) -> None:
    band = widgets.health_band(score)
    assert (band.colour, band.word) == (colour, word)


def test_health_bands_never_look_better_as_the_score_falls() -> None:
    order = [b.colour for b in widgets.HEALTH_BANDS]  # best first
    colours = [order.index(widgets.health_band(s).colour) for s in range(100, -1, -1)]
    assert colours == sorted(colours)
    assert widgets.HEALTH_BANDS[-1].lowest == 0  # every score has a band
    # One critical finding (100 - 20) is never "good"; none at all always is.
    assert widgets.health_band(80).word != "good" and widgets.health_band(100).word == "good"


@pytest.mark.parametrize(("header", "state"), [("unavailable", "unavailable"),
                                               ("rebuilding", "rebuilding"), (None, "")])
def test_a_503_about_the_fleet_state_is_told_from_other_errors(
    header: str | None, state: str,
) -> None:
    headers = {"Retry-After": "2", **({"X-Herd-State": header} if header else {})}
    response = httpx.Response(503, json={"error": "fleet state (Redis) is unreachable, try "
                                         "again"}, headers=headers)
    reply = data.decode(data._decode(response), FleetStatus)
    assert reply.data is None and reply.status == 503
    assert reply.fleet_state == state
    assert reply.error == "fleet state (Redis) is unreachable, try again (HTTP 503)"


def test_the_event_streams_last_error_is_read_in_ollamas_shape() -> None:
    assert live._stream_error('{"error": "fleet state (Redis) is unreachable, try again"}') \
        == "fleet state (Redis) is unreachable, try again"
    assert live._stream_error("gone") == "gone"
    assert "with an error" in live._stream_error("")
