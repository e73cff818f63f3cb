"""`X-Herd-Node` through a real router: the pinned node serves, an unservable pin is a 503."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.proxy_fleet import start_fleet

MODEL = "llama3.2:3b"
MSG = [{"role": "user", "content": "hello"}]


def test_x_herd_node_pins_the_request_and_an_unknown_pin_is_a_503(
    tmp_path: Path, redis_url: str,
) -> None:
    with start_fleet(tmp_path, redis_url, {"n0": [], "n1": []}) as fleet:
        # n1 has the model loaded, so an unpinned request goes there
        httpx.post(f"{fleet.sim_url('n1')}/api/generate",
                   json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        fleet.heartbeat_all()
        body = {"model": MODEL, "messages": MSG, "stream": False}
        free = httpx.post(f"{fleet.url}/api/chat", json=body, timeout=30)
        assert free.status_code == 200, free.text
        assert free.headers["x-fleet-node"] == "n1"

        pinned = httpx.post(f"{fleet.url}/api/chat", json=body,
                            headers={"X-Herd-Node": "n0"}, timeout=30)
        assert pinned.status_code == 200, pinned.text
        assert pinned.headers["x-fleet-node"] == "n0"
        assert any(r["path"] == "/api/chat" for r in fleet.sim_stats("n0")["last_requests"])

        ghost = httpx.post(f"{fleet.url}/api/chat", json=body,
                           headers={"X-Herd-Node": "ghost"}, timeout=30)
        assert ghost.status_code == 503, ghost.text
        assert "ghost" in ghost.json()["error"] and MODEL in ghost.json()["error"]
        assert ghost.headers["retry-after"]

        openai = httpx.post(f"{fleet.url}/v1/chat/completions",
                            json={"model": MODEL, "messages": MSG},
                            headers={"X-Herd-Node": "ghost"}, timeout=30)
        assert openai.status_code == 503, openai.text
        error = openai.json()["error"]
        assert error["type"] == "server_error" and "ghost" in error["message"]
