"""Two waiters with equal fair tags, through a real router and simulator: both are served,
twenty times in a row (they used to stall until the queue timeout)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.proxy_fleet import start_fleet

MODEL = "llama3.2:3b"
# One slot; each reply is 20 tokens at 20 tokens/s: a request holds the slot about 1 s.
SIM = ["--tokens-per-s", "20", "--response-tokens", "20-20"]
ROUNDS = 20


def test_equal_fair_tags_never_stall_the_queue(tmp_path: Path, redis_url: str) -> None:
    with start_fleet(tmp_path, redis_url, {"n0": SIM}, parallel=1,
                     env={"FLEET_QUEUE_TIMEOUT": "30"}) as fleet:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "stream": False}

        def chat(app: str, delay: float, t0: float) -> tuple[int, float]:
            time.sleep(max(0.0, t0 + delay - time.monotonic()))
            answer = httpx.post(f"{fleet.url}/api/chat", json=body,
                                headers={"X-Herd-Tags": app}, timeout=60)
            return answer.status_code, time.monotonic() - t0

        assert chat("warm", 0, time.monotonic())[0] == 200  # the model loads once, here
        slowest = 0.0
        with ThreadPoolExecutor(3) as pool:
            for round_no in range(ROUNDS):
                # a holds the slot; 0.3 s later b queues; 0.2 s after that a queues again:
                # b and a's second request get the same fair tag.
                t0 = time.monotonic()
                futures = [pool.submit(chat, app, delay, t0)
                           for app, delay in (("a", 0.0), ("b", 0.3), ("a", 0.5))]
                results = [f.result() for f in futures]
                assert [status for status, _ in results] == [200, 200, 200], (round_no, results)
                took = max(elapsed for _, elapsed in results)
                slowest = max(slowest, took)
                # Three 1 s requests in a row on one slot: ~3 s. A stall lasts 30 s.
                assert took < 5.0, f"round {round_no}: the last request took {took:.1f} s"
        queue = httpx.get(f"{fleet.url}/fleet/queue", timeout=5).json()
        assert sum(queue["waiting"].values()) == 0, queue
        print(f"slowest round: {slowest:.2f} s")
