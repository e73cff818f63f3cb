"""Every dashboard page under AppTest, reading a live router with simulated nodes and agents."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from streamlit_app import data, widgets
from streamlit_app.nav import PAGES
from tests.helpers import Proc, free_port, herd_bin, running, wait_until
from tests.redisproc import RedisProc

APP_DIR = Path(__file__).resolve().parents[2] / "streamlit_app"
FAST_SIM = ["--tokens-per-s", "400", "--load-base-seconds", "0.05",
            "--load-seconds-per-gb", "0.05", "--response-tokens", "8-24",
            "--pull-seconds-per-gb", "0.5"]
NODES = {
    "node-alpha": ["--models", "llama3.2:3b,nomic-embed-text", "--memory-gb", "16"],
    "node-beta": ["--models", "llama3.2:3b,qwen3:8b", "--memory-gb", "32"],
}


@dataclass
class LiveFleet:
    url: str
    data_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/fleet/status").json()
        return body


def _online(fleet: LiveFleet, count: int) -> bool:
    return int(fleet.status()["fleet"]["nodes_online"]) >= count


@contextlib.contextmanager
def start_fleet(
    tmp: Path, nodes: dict[str, list[str]], *, dashboard_port: int | None = None,
) -> Iterator[LiveFleet]:
    """A router (own embedded Redis), one `herd sim` and one `herd-node` per node id."""
    port = free_port()
    data_dir = tmp / "router-data"
    router_flags = ["--dashboard-port", str(dashboard_port)] if dashboard_port else \
        ["--no-dashboard"]
    fleet = LiveFleet(f"http://127.0.0.1:{port}", data_dir)
    try:
        fleet.procs.append(Proc(
            [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns",
             "--data-dir", str(data_dir), *router_flags], tmp / "router.log"))
        sims: dict[str, str] = {}
        for node_id, flags in nodes.items():
            sim_port = free_port()
            fleet.procs.append(Proc(
                [herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(sim_port),
                 "--node-name", node_id, *FAST_SIM, *flags], tmp / f"sim-{node_id}.log"))
            sims[node_id] = f"http://127.0.0.1:{sim_port}"
        fleet.procs[0].wait_http(fleet.url + "/healthz")
        for index, (node_id, sim_url) in enumerate(sims.items(), start=1):
            fleet.procs[index].wait_http(sim_url + "/api/version")
            fleet.procs.append(Proc(
                [herd_bin("herd-node"), "--router-url", fleet.url, "--ollama-host", sim_url,
                 "--node-id", node_id, "--no-mdns", "--data-dir", str(tmp / f"{node_id}-data")],
                tmp / f"agent-{node_id}.log", env={"FLEET_HEARTBEAT_INTERVAL": "1"}))
        if nodes:
            wait_until(lambda: _online(fleet, len(nodes)), timeout=30,
                       message="every node online")
        yield fleet
    finally:
        for proc in fleet.procs:  # all at once: each takes a moment to shut down
            proc.signal(signal.SIGTERM)
        for proc in reversed(fleet.procs):
            proc.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    with start_fleet(tmp_path_factory.mktemp("dashfleet"), NODES) as live:
        # Real traffic, tagged, so loaded models, queues, stats and apps have something to show.
        for index, (path, body) in enumerate([
            ("/api/chat", {"model": "llama3.2:3b", "stream": False,
                           "messages": [{"role": "user", "content": "hello"}]}),
            ("/api/generate", {"model": "qwen3:8b", "prompt": "hi", "stream": False}),
            ("/api/embed", {"model": "nomic-embed-text", "input": "hi"}),
            ("/api/chat", {"model": "llama3.2:3b", "stream": False,
                           "messages": [{"role": "user", "content": "again"}]}),
        ]):
            answer = httpx.post(live.url + path, json=body, timeout=60,
                                headers={"X-Herd-Tags": f"app-{index % 2}"})
            assert answer.status_code == 200, answer.text
        wait_until(lambda: live.status()["fleet"]["models_loaded"] >= 3, timeout=15,
                   message="agents to report the loaded models")
        yield live


@pytest.fixture(scope="module")
def empty_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    with start_fleet(tmp_path_factory.mktemp("emptyfleet"), {}) as live:
        yield live


def page(router_url: str, name: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A page script run once against `router_url` (the launcher passes it after `--`)."""
    monkeypatch.setattr(sys, "argv", ["app.py", "--router-url", router_url])
    target = APP_DIR / ("app.py" if name == "app" else f"app_pages/{name}.py")
    at = AppTest.from_file(str(target), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption]
    parts += [e.value for e in [*at.info, *at.success, *at.warning, *at.error]]
    parts += [f"{m.label}={m.value}" for m in at.metric]
    parts += [str(h.value) for h in [*at.title, *at.subheader, *at.header]]
    return "\n".join(parts)


def test_fleet_overview_shows_each_node_with_its_loaded_models(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = page(fleet.url, "fleet", monkeypatch)
    shown = texts(at)
    status = fleet.status()
    for node in status["nodes"]:
        assert f":green[:material/check_circle:] {node['node_id']}" in shown
        for model in node["models_loaded"]:
            assert f"`{model['name']}` · ctx {model['context_length']:,}" in shown
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Nodes online"] == "2 / 2"
    queues = at.table[0].value
    assert set(queues.index) == set(status["queues"])
    assert queues["done"].sum() >= 4


def test_entry_app_lands_on_fleet_overview_and_reports_the_router(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = page(fleet.url, "app", monkeypatch)
    assert "Fleet Overview" in [t.value for t in at.title]
    assert any("2/2 nodes online" in s.value for s in at.sidebar.success)
    at.switch_page("app_pages/health.py").run()
    assert not at.exception
    assert "Health" in [t.value for t in at.title]


def test_health_page_matches_the_api(fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    body = fleet.get("/dashboard/api/health").json()
    at = page(fleet.url, "health", monkeypatch)
    metrics = {m.label: m.value for m in at.metric}
    score = body["vitals"]["health_score"]
    assert metrics["Health score"] == f"{score} / 100"
    assert metrics["Nodes online"] == "2"
    # The score's word and its meter share the band's colour (no red bar for a full score).
    band = widgets.health_band(score)
    tile = next(m for m in at.metric if m.label == "Health score")
    assert tile.delta == band.word
    meter = next(h.value for h in at.get("html") if 'aria-label="Health score"' in h.value)
    assert f'data-colour="{band.colour}"' in meter and f'aria-valuenow="{float(score)}"' in meter
    assert not at.get("progress")
    shown = texts(at)
    if not body["recommendations"]:
        assert "every health check passed" in shown
    for item in body["recommendations"]:
        assert item["title"] in "\n".join(e.label for e in at.expander)


def test_recommendations_page_lists_each_recommendation(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = fleet.get("/dashboard/api/recommendations").json()
    at = page(fleet.url, "recommendations", monkeypatch)
    shown = texts(at)
    expected = [(n["node_id"], r) for n in body["nodes"] for r in n["recommendations"]]
    assert expected, body  # traffic above gives the agents loaded models worth keeping
    kept = at.table[0].value if at.table else None
    for node_id, rec in expected:
        if rec["action"] == "keep":
            assert kept is not None
            assert rec["model"] in set(kept.loc[[node_id], "Model"])
        else:
            assert f"**{rec['action']}** `{rec['model']}` on **{node_id}**" in shown
            assert rec["reason"] in shown


@pytest.mark.parametrize(("name", "path", "title"), [
    ("trends", "/dashboard/api/trends", "Trends"),
    ("models", "/dashboard/api/models", "Model Insights"),
    ("apps", "/dashboard/api/apps", "Apps"),
    ("benchmarks", "/dashboard/api/benchmarks", "Benchmarks"),
])
def test_stats_pages_render_what_the_api_has(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch, name: str, path: str, title: str,
) -> None:
    answer = fleet.get(path)
    at = page(fleet.url, name, monkeypatch)
    assert title in [t.value for t in at.title]
    if answer.status_code == 404:
        assert "does not offer" in texts(at)
        return
    assert answer.status_code == 200, answer.text
    assert not at.error, [e.value for e in at.error]
    drawn = len(at.dataframe) + len(at.get("arrow_line_chart")) + len(at.get("arrow_bar_chart"))
    assert drawn or at.info, f"{name} drew neither data nor an explanation"


def test_model_insights_show_where_models_are_loaded(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if fleet.get("/dashboard/api/models").status_code == 404:
        pytest.skip("/dashboard/api/models is not built yet")
    at = page(fleet.url, "models", monkeypatch)
    table = next(d.value for d in at.dataframe if "requests" in d.value.columns)
    loaded = dict(zip(table["model"], table["loaded_on"], strict=True))
    assert "node-alpha" in loaded["llama3.2:3b"] or "node-beta" in loaded["llama3.2:3b"]


def test_models_page_pins_and_unpins_a_model(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = page(fleet.url, "models", monkeypatch)
    at.text_input(key="pin_model").input("qwen3:8b")
    at.number_input(key="pin_copies").set_value(1)
    at.text_input(key="pin_nodes").input("node-beta")
    at.button(key="pin_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert "Pinned qwen3:8b: 1 copy." in [s.value for s in at.success]
    listed = fleet.get("/fleet/pins").json()["pins"]
    assert [(p["model"], p["nodes"]) for p in listed] == [("qwen3:8b", ["node-beta"])]
    again = page(fleet.url, "models", monkeypatch)
    pins = next(d.value for d in again.dataframe if "state" in d.value.columns)
    assert list(pins["model"]) == ["qwen3:8b"]
    # a bad pin: the router's words
    again.text_input(key="pin_model").input("qwen3:8b")
    again.number_input(key="pin_copies").set_value(3)
    again.text_input(key="pin_nodes").input("node-beta")
    again.button(key="pin_save").click().run()
    assert any("cannot fit on the 1 node" in e.value for e in again.error)
    again.text_input(key="pin_model").input("qwen3:8b")
    again.button(key="pin_remove").click().run()
    assert any("Unpinned qwen3:8b" in s.value for s in again.success)
    assert fleet.get("/fleet/pins").json()["pins"] == []


def test_settings_form_saves_a_change(fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = fleet.get("/dashboard/api/settings").json()["settings"]
    before = {s["name"]: s["value"] for s in listing}
    at = page(fleet.url, "settings", monkeypatch)
    new_value = before["max_retries"] + 1
    at.number_input(key="setting:max_retries").set_value(new_value)
    at.checkbox(key="setting:auto_pull").set_value(not before["auto_pull"])
    at.button(key="settings_save").click().run()
    assert not at.exception
    assert any("max_retries = " in s.value for s in at.success), texts(at)
    listing = fleet.get("/dashboard/api/settings").json()["settings"]
    after = {s["name"]: s["value"] for s in listing}
    assert after["max_retries"] == new_value
    assert after["auto_pull"] is (not before["auto_pull"])
    restore = httpx.post(fleet.url + "/dashboard/api/settings", timeout=10,
                         json={"max_retries": before["max_retries"],
                               "auto_pull": before["auto_pull"]})
    assert restore.status_code == 200


def test_settings_form_edits_the_model_aliases(fleet: LiveFleet,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    at = page(fleet.url, "settings", monkeypatch)
    field = at.text_input(key="setting:model_aliases")
    assert field.value == "{}"
    field.set_value('{"claude-*": "llama3.2:3b"}')
    at.button(key="settings_save").click().run()
    assert not at.exception
    assert any("model_aliases = " in s.value for s in at.success), texts(at)
    listing = fleet.get("/dashboard/api/settings").json()["settings"]
    assert {s["name"]: s["value"] for s in listing}["model_aliases"] == {
        "claude-*": "llama3.2:3b"}
    again = page(fleet.url, "settings", monkeypatch)  # a later visit shows the stored value
    assert again.text_input(key="setting:model_aliases").value == '{"claude-*": "llama3.2:3b"}'
    at.text_input(key="setting:model_aliases").set_value('{"claude-*": "not a name"}')
    at.button(key="settings_save").click().run()
    assert any("model_aliases" in e.value for e in at.error), texts(at)
    restore = httpx.post(fleet.url + "/dashboard/api/settings", timeout=10,
                         json={"model_aliases": {}})
    assert restore.status_code == 200


@pytest.mark.parametrize(("raw", "named"), [
    ('{"max_retries": "lots"}', "max_retries"),
    ('{"no_such_setting": 1}', "no_such_setting"),
])
def test_settings_form_shows_the_api_error(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch, raw: str, named: str,
) -> None:
    at = page(fleet.url, "settings", monkeypatch)
    at.text_area(key="settings_raw").set_value(raw)
    at.button(key="settings_save").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("refused" in e and named in e and "HTTP 400" in e for e in errors), errors


def test_settings_form_refuses_json_that_is_not_an_object(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = page(fleet.url, "settings", monkeypatch)
    at.text_area(key="settings_raw").set_value("[1, 2")
    at.button(key="settings_save").click().run()
    assert any("not JSON" in e.value for e in at.error)


def test_keys_section_creates_shows_once_lists_and_revokes(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    chat = {"model": "llama3.2:3b", "stream": False,
            "messages": [{"role": "user", "content": "who am I?"}]}
    try:
        at = page(fleet.url, "settings", monkeypatch)
        assert any("Inference is open" in w.value for w in at.warning), texts(at)
        at.text_input(key="key_app").set_value("dash-app")
        at.number_input(key="key_rpm").set_value(30)
        at.button(key="key_create_button").click().run()
        assert not at.exception
        assert any("dash-app" in s.value and "not shown again" in s.value
                   for s in at.success), texts(at)
        secret = at.code[-1].value
        assert secret.startswith("herd-")
        listed = fleet.get("/dashboard/api/keys").json()["keys"]
        assert [(k["app"], k["requests_per_minute"]) for k in listed] == [("dash-app", 30)]
        at = page(fleet.url, "settings", monkeypatch)  # a later visit: listed, secret gone
        assert "dash-app" in list(at.dataframe[-1].value["app"])
        assert secret not in texts(at) and all(secret not in c.value for c in at.code)
        assert any("Inference is closed" in i.value for i in at.info), texts(at)
        at.selectbox(key="key_revoke_app").select("dash-app")
        at.button(key="key_revoke_button").click().run()
        assert any("Revoked dash-app" in s.value for s in at.success), texts(at)
        assert fleet.get("/dashboard/api/keys").json()["keys"] == []
        # The last key gone, inference stays closed; the refusal shows on the Apps page.
        assert httpx.post(fleet.url + "/api/chat", json=chat, timeout=30).status_code == 401
        at = page(fleet.url, "settings", monkeypatch)
        assert any("No key is left" in i.value for i in at.info), texts(at)
        apps = page(fleet.url, "apps", monkeypatch).dataframe[-1].value
        refused = apps[apps["tag"] == "(none)"]
        assert len(refused) == 1 and int(refused["unauthorized"].iloc[0]) >= 1, apps
        at.button(key="access_open").click().run()
        assert any("open to everyone" in s.value for s in at.success), texts(at)
        assert any("Inference is open" in w.value for w in at.warning), texts(at)
        assert fleet.get("/dashboard/api/keys").json()["client_auth"] == "open"
        assert httpx.post(fleet.url + "/api/chat", json=chat, timeout=30).status_code == 200
    finally:  # inference in this module's fleet stays open for the other tests
        httpx.delete(f"{fleet.url}/dashboard/api/keys/dash-app", timeout=10)
        httpx.post(fleet.url + "/dashboard/api/settings", json={"client_auth": "open"},
                   timeout=10)


def test_benchmark_button_starts_a_run_that_is_then_listed(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = page(fleet.url, "benchmarks", monkeypatch)
    at.number_input(key="bench_requests").set_value(4)
    at.number_input(key="bench_tokens").set_value(8)
    at.text_input(key="bench_model").set_value("llama3.2:3b")
    at.button(key="bench_go").click().run()
    assert not at.exception
    started = [s.value for s in at.success]
    assert started and started[0].startswith("Benchmark started: run "), texts(at)
    run_id = started[0].split("run ", 1)[1].split(" ", 1)[0]

    def finished() -> bool:
        runs = fleet.get("/dashboard/api/benchmarks").json()["runs"]
        return any(r["run_id"] == run_id and r["status"] == "completed" for r in runs)

    wait_until(finished, timeout=30, message="the benchmark to finish")
    at = page(fleet.url, "benchmarks", monkeypatch)
    table = at.dataframe[0].value
    row = table[table["run_id"] == run_id].iloc[0]
    assert row["done"] == 4 and row["models"] == "llama3.2:3b"
    assert row["source"] == "dashboard" and row["ttft_p50_ms"] > 0
    per_node = at.dataframe[2].value  # the newest run in detail, per node
    assert per_node["requests"].sum() == 4


def test_a_two_model_run_shows_both_models(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = subprocess.run(
        [herd_bin(), "bench", "--router-url", fleet.url, "--model", "llama3.2:3b",
         "--model", "qwen3:8b", "--requests", "4", "--concurrency", "2", "--max-tokens", "8",
         "--json"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")})
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    data.refresh()  # as "Refresh now" does: the last test's read may be in the 1.5 s cache
    at = page(fleet.url, "benchmarks", monkeypatch)
    runs = at.dataframe[0].value
    row = runs[runs["run_id"] == run_id].iloc[0]
    assert row["models"] == "llama3.2:3b, qwen3:8b" and row["done"] == 4
    picked = at.selectbox(key="bench_detail")
    assert picked.value.startswith(run_id)  # the newest run is the one in detail
    per_model = at.dataframe[1].value
    assert dict(zip(per_model["model"], per_model["requests"], strict=True)) == {
        "llama3.2:3b": 2, "qwen3:8b": 2}


def headers(table: Any) -> dict[str, str]:
    """A drawn table's columns in order: data column -> the header the page shows."""
    config = json.loads(table.proto.columns or "{}")
    return {name: config.get(name, {}).get("label") or name for name in table.proto.column_order}


@pytest.mark.parametrize("name", ["benchmarks", "models", "apps", "recommendations", "trends"])
def test_tables_have_human_headers_with_units(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    at = page(fleet.url, name, monkeypatch)
    assert at.dataframe, f"{name} drew no table"
    for table in at.dataframe:
        shown = headers(table)
        assert shown, "every column of the data drawn: the table is wider than the page"
        assert set(shown) <= set(table.value.columns)
        for column, header in shown.items():
            assert "_" not in header, f"{name}: raw column name {header!r}"
            if column.endswith("_ms"):
                assert header.endswith("(ms)"), (name, column, header)
            if column.endswith("_gb"):
                assert header.endswith("(GB)"), (name, column, header)
        assert len(shown) <= 11, f"{name}: {len(shown)} columns do not fit 1280 px"


def test_empty_fleet_explains_how_to_add_a_node(
    empty_router: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = page(empty_router.url, "fleet", monkeypatch)
    assert "No nodes have joined" in texts(at)
    assert f"herd-node --router-url {empty_router.url}" in at.code[0].value


@pytest.mark.parametrize("name", ["fleet", "health", "settings"])
def test_unreachable_router_is_said_plainly(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    at = page(closed, name, monkeypatch)
    assert any("router is unreachable" in e.value and closed in e.value for e in at.error)


@pytest.fixture(scope="module")
def frozen_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A router whose Redis is stopped (SIGSTOP) for the duration."""
    tmp = tmp_path_factory.mktemp("frozen-redis")
    redis = RedisProc(tmp, "redis").start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with running([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns",
                      "--no-dashboard", "--redis-url", redis.url, "--data-dir", str(tmp / "d")],
                     tmp / "router.log", env={"FLEET_REDIS_TIMEOUT": "0.5"}) as router:
            router.wait_http(url + "/healthz")
            redis.freeze()
            yield url
            redis.thaw()
    finally:
        redis.stop()


@pytest.mark.parametrize("name", ["app", *(file.removesuffix(".py") for file, _, _ in PAGES)])
def test_pages_say_the_fleet_state_is_unavailable_while_redis_is_frozen(
    frozen_router: str, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    monkeypatch.setattr(sys, "argv", ["app.py", "--router-url", frozen_router])
    target = APP_DIR / ("app.py" if name == "app" else f"app_pages/{name}.py")
    at = AppTest.from_file(str(target), default_timeout=10)  # a page that spins fails here
    started = time.monotonic()
    at.run()
    print(f"{name}: drawn in {time.monotonic() - started:.2f} s")
    assert not at.exception, [e.value for e in at.exception]
    assert any("fleet state is unavailable" in e.value for e in at.error), texts(at)
    assert not any("router is unreachable" in e.value for e in at.error)
    if name == "app":
        assert any("fleet state unavailable" in e.value for e in at.sidebar.error)


def test_pull_from_recommendations_streams_progress(
    fleet: LiveFleet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if fleet.get("/dashboard/api/model-management").status_code == 404:
        pytest.skip("/dashboard/api/model-management is not built yet")
    at = page(fleet.url, "recommendations", monkeypatch)
    at.selectbox(key="pull_node").set_value("node-alpha")
    at.text_input(key="pull_name").set_value("llama3.2:1b")
    at.button(key="pull_go").click().run()
    assert not at.exception
    assert any("Pulled llama3.2:1b on node-alpha" in s.value for s in at.success), texts(at)
    wait_until(lambda: "llama3.2:1b" in json.dumps(
        fleet.get("/dashboard/api/model-management").json()), timeout=10,
        message="the agent to report the pulled model")
