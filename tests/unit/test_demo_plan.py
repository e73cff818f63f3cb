"""`herd demo`'s plan: unlike nodes, a mixed workload, a banner with snippets, a time limit,
an admin token for its load, and failures said while they happen."""

from __future__ import annotations

import asyncio
import io
import random
import stat
from pathlib import Path

from services.demo import NODES, Demo, admin_token, banner
from services.demo_load import WORKLOAD, LoadWatch, choose, failure_reason
from services.sim.catalogue import normalize_name, spec_for


def test_three_unlike_nodes_whose_models_fit_them() -> None:
    assert len(NODES) == 3
    assert len({n.memory_gb for n in NODES}) == 3
    assert len({n.models for n in NODES}) == 3
    for node in NODES:
        for model in node.models:
            assert spec_for(model).size / 1e9 < node.memory_gb, (node.name, model)


def test_every_workload_model_is_on_some_node() -> None:
    offered = {normalize_name(m) for n in NODES for m in n.models}
    for _weight, kind, model, tag in WORKLOAD:
        assert normalize_name(model) in offered, model
        assert kind in {"chat", "generate", "embed", "messages", "responses"} and tag
    rng = random.Random(1)
    drawn = {choose(rng)[1] for _ in range(300)}
    assert drawn == {m for *_rest, m, _tag in WORKLOAD}


def test_banner_has_urls_and_both_snippets() -> None:
    text = banner("http://127.0.0.1:11435", 8501, load=True)
    assert "http://localhost:8501" in text
    assert "curl -s http://127.0.0.1:11435/api/chat" in text
    assert 'OpenAI(base_url="http://127.0.0.1:11435/v1"' in text
    assert "Ctrl-C" in text


def test_duration_ends_the_watch(tmp_path: Path) -> None:
    demo = Demo(port=1, dashboard_port=2, data_dir=tmp_path, load=False, duration=0.2)

    async def watch() -> bool:
        await asyncio.wait_for(demo.watch(), 5)
        return demo.stopping.is_set()

    assert asyncio.run(watch())
    assert demo.failure == ""


def test_the_admin_token_is_made_once_owner_only_and_the_banner_shows_its_file(
    tmp_path: Path,
) -> None:
    assert admin_token(tmp_path, "from-env") == "from-env"
    assert not (tmp_path / "admin-token").exists()
    made = admin_token(tmp_path / "demo")
    path = tmp_path / "demo" / "admin-token"
    assert made.startswith("herd-admin-") and len(made) > 30
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin_token(tmp_path / "demo") == made  # the next run: the same token
    text = banner("http://127.0.0.1:11435", 8501, True, path)
    assert f'export FLEET_ADMIN_TOKEN="$(cat {path})"' in text
    assert made not in text  # the path, never the secret
    demo = Demo(port=1, dashboard_port=2, data_dir=tmp_path / "demo", load=True,
                duration=None, token=made)
    assert demo.token_file() == path
    other = Demo(port=1, dashboard_port=2, data_dir=tmp_path / "demo", load=True,
                 duration=None, token="from-env")
    assert other.token_file() is None


def test_failure_reasons_in_both_shapes() -> None:
    assert failure_reason(401, b'{"error": "invalid API key"}') == "HTTP 401: invalid API key"
    assert failure_reason(429, b'{"error": {"message": "over its limit", "type": "requests"}}') \
        == "HTTP 429: over its limit"
    assert failure_reason(502, b"<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"
    assert failure_reason(500, b"[1, 2]") == "HTTP 500: [1, 2]"
    assert failure_reason(503, b"") == "HTTP 503"


def test_load_failures_are_said_at_once_and_not_over_and_over() -> None:
    out = io.StringIO()
    watch = LoadWatch(out, quiet_s=3600)
    watch.succeeded()
    assert out.getvalue() == ""
    watch.failed("HTTP 401: invalid API key")
    watch.failed("HTTP 401: invalid API key")
    assert out.getvalue().splitlines() == [
        "herd demo: background requests are failing: HTTP 401: invalid API key"]
    watch.succeeded()
    assert out.getvalue().splitlines()[-1] == \
        "herd demo: background requests succeed again (2 failed meanwhile)"
    # A load that flaps within the quiet time says nothing more.
    watch.failed("HTTP 503: queue full")
    watch.succeeded()
    assert len(out.getvalue().splitlines()) == 2
    loud = LoadWatch(out, quiet_s=0)
    loud.failed("ConnectError: refused")
    assert out.getvalue().splitlines()[-1].endswith("failing: ConnectError: refused")
