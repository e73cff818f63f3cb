"""Conversations through a real router: later turns go back to the node whose prompt cache
holds the earlier ones, and that node's simulator counts the cache hits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.proxy_fleet import start_fleet

MODEL = "llama3.2:3b"


def test_later_turns_follow_the_conversation_to_its_node(
    tmp_path: Path, redis_url: str,
) -> None:
    # Latency scoring off: the node that served turn one would also be the only one with
    # latency figures, and would win turn two for that reason alone.
    with start_fleet(tmp_path, redis_url, {"n0": [], "n1": []},
                     env={"FLEET_WEIGHT_LATENCY": "0"}) as fleet:
        for name in ("n0", "n1"):  # both have the model loaded: only affinity tells them apart
            httpx.post(f"{fleet.sim_url(name)}/api/generate",
                       json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        fleet.heartbeat_all()
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Plan a three-day trip to Lisbon."},
        ]

        def turn(headers: dict[str, str] | None = None) -> httpx.Response:
            r = httpx.post(f"{fleet.url}/api/chat", timeout=30, headers=headers,
                           json={"model": MODEL, "messages": messages, "stream": False})
            assert r.status_code == 200, r.text
            messages.append(r.json()["message"])
            return r

        # The first turn lands on n1 (pinned: without history, a tie would pick n0 by name).
        assert turn({"X-Herd-Node": "n1"}).headers["x-fleet-node"] == "n1"
        hits_before = fleet.sim_stats("n1")["total"]["prompt_cache_hits"]
        for question in ("And on day two?", "What should I eat there?"):
            messages.append({"role": "user", "content": question})
            assert turn().headers["x-fleet-node"] == "n1"
        assert fleet.sim_stats("n1")["total"]["prompt_cache_hits"] >= hits_before + 2


def test_chats_through_two_replicas_stay_on_their_node(tmp_path: Path, redis_url: str) -> None:
    """Behind a round-robin front each turn may reach another replica: the conversation
    index in Redis still sends later turns to the node that took the last one."""
    with start_fleet(tmp_path, redis_url, {"n0": [], "n1": [], "n2": []},
                     replicas=2) as fleet:
        for name in fleet.sims:
            httpx.post(f"{fleet.sim_url(name)}/api/generate",
                       json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        fleet.heartbeat_all()
        chats: list[list[dict[str, Any]]] = [
            [{"role": "user", "content": f"Question {c}: tell me about place {c}."}]
            for c in range(6)
        ]
        verdicts: list[str] = []
        firsts: list[str] = []
        for turn in range(4):
            for c, messages in enumerate(chats):
                replica = fleet.urls[(c + turn) % 2]  # turns alternate between replicas
                r = httpx.post(f"{replica}/api/chat", timeout=30,
                               json={"model": MODEL, "messages": messages, "stream": False})
                assert r.status_code == 200, r.text
                (firsts if turn == 0 else verdicts).append(r.headers["x-fleet-affinity"])
                messages += [r.json()["message"], {"role": "user", "content": "And then?"}]
        assert firsts == ["new"] * 6
        assert verdicts == ["hit"] * len(verdicts), verdicts

        # An explicit session groups /api/generate requests the same way
        seen = []
        for i in range(3):
            r = httpx.post(f"{fleet.urls[i % 2]}/api/generate", timeout=30,
                           headers={"X-Herd-Session": "report-42"},
                           json={"model": MODEL, "prompt": f"part {i}", "stream": False})
            assert r.status_code == 200, r.text
            seen.append(r.headers["x-fleet-affinity"])
        # each replica's load figures, read twice a second, may still count the last turn
        # as running on its node: the slot acquisition rates that node on its live leases
        assert seen == ["new", "hit", "hit"]
        # a stream carries the header too
        with httpx.stream("POST", f"{fleet.urls[1]}/api/generate", timeout=30,
                          headers={"X-Herd-Session": "report-42"},
                          json={"model": MODEL, "prompt": "more"}) as r:
            r.read()
            assert r.headers["x-fleet-affinity"] == "hit"
