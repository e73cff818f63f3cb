"""Context protection against a simulator that reloads like Ollama: a request's num_ctx
different from the loaded copy's (no num_ctx meaning the default) reloads the model."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.proxy_fleet import start_fleet

MODEL = "llama3.2:3b"


def test_requests_without_num_ctx_use_the_larger_loaded_context(
    tmp_path: Path, redis_url: str,
) -> None:
    with start_fleet(tmp_path, redis_url, {"n0": ["--default-num-ctx", "4096"]}) as fleet:
        # A client asks for 8192: the copy loads with it.
        r = httpx.post(f"{fleet.url}/api/generate", timeout=30, json={
            "model": MODEL, "prompt": "long document", "stream": False,
            "options": {"num_ctx": 8192}, "keep_alive": -1})
        assert r.status_code == 200, r.text
        fleet.heartbeat("n0")  # the router learns the copy's context
        ps = httpx.get(f"{fleet.sim_url('n0')}/api/ps", timeout=5).json()["models"]
        assert [m["context_length"] for m in ps] == [8192]
        fleet.sim_reset("n0")

        # Background traffic with no num_ctx: through Herd, the copy stays as it is.
        for i in range(3):
            r = httpx.post(f"{fleet.url}/api/chat", timeout=30, json={
                "model": MODEL, "stream": False,
                "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert r.status_code == 200, r.text
        stats = fleet.sim_stats("n0")["total"]
        assert stats["reloads"] == 0 and stats["loads"] == 0
        assert '"action":"inherited"' in fleet.log().replace(" ", "")

        # The same request sent straight to the node reloads it at the default.
        r = httpx.post(f"{fleet.sim_url('n0')}/api/chat", timeout=30, json={
            "model": MODEL, "stream": False, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
        assert fleet.sim_stats("n0")["total"]["reloads"] == 1
