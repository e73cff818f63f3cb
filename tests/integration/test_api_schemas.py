"""Real answers of the router decode into the structs of shared/schemas.py, field for field.

Each endpoint is read in-process over real Redis after a real ollama-herd heartbeat and a
few requests' traces; the answer is decoded the way the dashboard decodes it, and encoding
the struct again must give back exactly the JSON the router sent: no field the contract
misses, none it invents.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from services.router.api.events import fleet_event
from services.router.app import create_app
from services.router.context import RouterContext
from services.router.fleet import traces
from services.router.fleet.stats import add_request
from shared import schemas
from shared.models import TraceStatus
from shared.settings import Settings
from streamlit_app import data
from tests.helpers import make_trace

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "herd-heartbeat-example.json"

ANSWERS: list[tuple[str, type[Any]]] = [
    ("/fleet/status", schemas.FleetStatus),
    ("/fleet/queue", schemas.FleetQueue),
    ("/dashboard/api/health", schemas.HealthReport),
    ("/dashboard/api/recommendations", schemas.Recommendations),
    ("/dashboard/api/traces", schemas.TraceList),
    ("/dashboard/api/usage", schemas.UsageReport),
    ("/dashboard/api/apps", schemas.AppsReport),
    ("/dashboard/api/trends", schemas.TrendsReport),
    ("/dashboard/api/models", schemas.ModelsReport),
    ("/dashboard/api/model-management", schemas.ModelManagement),
    ("/dashboard/api/settings", schemas.SettingsListing),
    ("/dashboard/api/benchmarks", schemas.BenchmarkList),
    ("/dashboard/api/keys", schemas.KeyList),
    ("/api/version", schemas.VersionAnswer),
    ("/healthz", schemas.HealthzOk),
    ("/api/tags", schemas.TagsList),
    ("/api/ps", schemas.PsList),
    ("/v1/models", schemas.OpenAIModelList),
]


ADMIN = {"Authorization": "Bearer schema-admin"}


@pytest.fixture
async def client(settings: Settings, redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings.replace(admin_token="schema-admin"), redis_url)
    async with AsyncTestClient(app) as test_client:
        test_client.headers.update(ADMIN)
        yield test_client


@pytest.fixture
async def busy(client: AsyncTestClient[Any], ctx: RouterContext) -> AsyncTestClient[Any]:
    """A fleet with ollama-herd's real heartbeat, and traces of served and failed requests."""
    payload = json.loads(EXAMPLE.read_text())
    beat = await client.post("/heartbeat", json=payload)
    assert beat.status_code == 200
    assert msgspec.convert(beat.json(), schemas.HeartbeatAnswer).node_status == "online"
    node_id = payload["node_id"]
    model = payload["ollama"]["models_loaded"][0]["name"]
    pipe = ctx.redis.pipeline(transaction=False)
    for item in (make_trace(node_id, model, tags=["crm"]),
                 make_trace(node_id, model, status=TraceStatus.FAILED, load_duration_ms=900.0),
                 make_trace("", "typo:x", status=TraceStatus.REJECTED)):
        traces.add_trace(pipe, ctx, item)
        add_request(pipe, ctx, item)
    await pipe.execute()
    deadline = time.monotonic() + 3
    while not (await client.get("/fleet/status")).json()["nodes"]:
        assert time.monotonic() < deadline, "the heartbeat never reached the snapshot"
    return client


@pytest.mark.parametrize(("path", "shape"), ANSWERS, ids=[path for path, _ in ANSWERS])
async def test_answer_decodes_into_its_struct_field_for_field(
    busy: AsyncTestClient[Any], path: str, shape: type[Any],
) -> None:
    response = await busy.get(path)
    assert response.status_code == 200, response.text
    body = response.json()
    reply = data.decode(data.Reply(body, "", 200), shape)
    assert reply.error == ""
    assert isinstance(reply.data, shape)
    assert msgspec.to_builtins(reply.data) == body


async def test_the_decoded_fleet_reads_by_field(busy: AsyncTestClient[Any]) -> None:
    body = (await busy.get("/fleet/status")).json()
    status = msgspec.convert(body, schemas.FleetStatus)
    node = status.nodes[0]
    example = json.loads(EXAMPLE.read_text())
    assert node.node_id == example["node_id"]
    assert node.status == "online"
    assert node.cpu.utilization_pct == body["nodes"][0]["cpu"]["utilization_pct"]
    assert [m.name for m in node.models_loaded] == [
        m["name"] for m in example["ollama"]["models_loaded"]]
    assert status.fleet.nodes_online == 1


async def test_the_live_fleet_event_is_the_status_with_a_reason(ctx: RouterContext) -> None:
    payload = json.loads(EXAMPLE.read_text())
    await ctx.fleet.ingest_heartbeat(payload, "127.0.0.1")
    encoded = msgspec.json.encode(await fleet_event(ctx, "initial"))
    event = msgspec.json.decode(encoded, type=schemas.FleetEvent)
    assert event.reason == "initial"
    assert [n.node_id for n in event.nodes] == [payload["node_id"]]
    assert event.fleet.nodes_total == 1
    assert event.fleet.requests_waiting == sum(event.waiting.values())
    assert msgspec.to_builtins(event) == msgspec.json.decode(encoded)


async def test_a_posted_change_answers_in_its_struct(busy: AsyncTestClient[Any]) -> None:
    response = await busy.post("/dashboard/api/settings", json={"auto_pull": True})
    assert response.status_code == 200
    update = msgspec.convert(response.json(), schemas.SettingsUpdate)
    assert update.updated == {"auto_pull": True}
    assert next(s for s in update.settings if s.name == "auto_pull").value is True
    assert msgspec.to_builtins(update) == response.json()


async def test_errors_decode_in_their_api_shape(busy: AsyncTestClient[Any]) -> None:
    ollama = await busy.get("/dashboard/api/traces?limit=0")
    assert ollama.status_code == 400
    assert "limit" in msgspec.convert(ollama.json(), schemas.ErrorAnswer).error
    openai = await busy.get("/v1/models/no-such-model")
    assert openai.status_code == 404
    assert msgspec.convert(openai.json(), schemas.OpenAIErrorAnswer).error.type
