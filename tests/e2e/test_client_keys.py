"""Client keys through real HTTP: the herd CLI makes them, the official clients use them.

One router process with an admin and a node token over one simulated node; a second
replica on the same Redis prefix shows that limits and revocation hold fleet-wide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import Proc, free_port, herd_bin, wait_until

MODEL = "llama3.2:3b"
MSG = [{"role": "user", "content": "hello there"}]
ADMIN = "admin-s3cret-token"
NODE = "node-s3cret-token"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("keys-fleet")
    env = {"FLEET_ADMIN_TOKEN": ADMIN, "FLEET_NODE_TOKEN": NODE}
    with start_fleet(tmp, redis_url, {"k0": []}, env=env, node_token=NODE) as running:
        yield running


@pytest.fixture(scope="module")
def replica(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory,
            redis_url: str) -> Iterator[str]:
    """A second router on the same Redis prefix: another replica of the same fleet."""
    port = free_port()
    proc = Proc(
        [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url", redis_url,
         "--no-mdns", "--no-dashboard",
         "--data-dir", str(tmp_path_factory.mktemp("replica-data"))],
        tmp_path_factory.mktemp("replica") / "router.log",
        env={"FLEET_REDIS_PREFIX": fleet.prefix, "FLEET_ADMIN_TOKEN": ADMIN,
             "FLEET_HEARTBEAT_TIMEOUT": "600", "FLEET_HEARTBEAT_OFFLINE": "1200",
             "FLEET_RECORDER_ENABLED": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(f"{url}/healthz")
        wait_until(lambda: httpx.get(f"{url}/api/tags", timeout=2).json()["models"],
                   message="the replica sees the fleet")
        yield url
    finally:
        proc.stop()


def herd_keys(fleet: Fleet, *args: str, token: str = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    if token:
        env["FLEET_ADMIN_TOKEN"] = token
    return subprocess.run([herd_bin(), "keys", "--router-url", fleet.url, *args],
                          capture_output=True, text=True, env=env, timeout=30, check=False)


def create(fleet: Fleet, app: str, rpm: int = 0, tpm: int = 0) -> str:
    done = herd_keys(fleet, "create", app, "--requests-per-minute", str(rpm),
                     "--tokens-per-minute", str(tpm))
    assert done.returncode == 0, done.stderr
    found = re.search(r"^(herd-\S+)$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    return found.group(1)


def admin(fleet: Fleet) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def chat(url: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/api/chat", json={"model": MODEL, "messages": MSG, "stream": False},
                      headers=headers, timeout=30)


def test_the_clients_use_a_key_and_the_app_names_their_requests(fleet: Fleet) -> None:
    # No key yet and no client token: inference is open.
    assert chat(fleet.url, None).status_code == 200
    key = create(fleet, "chatbot")
    oa = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=key, max_retries=0)
    reply = oa.chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    chunks = list(oa.chat.completions.create(
        model=MODEL, messages=MSG, stream=True))  # type: ignore[arg-type]
    assert chunks
    oc = ollama.Client(host=fleet.url, headers={"Authorization": f"Bearer {key}"})
    assert oc.chat(model=MODEL, messages=MSG).message.content
    assert oc.embed(model="nomic-embed-text:latest", input="hi").embeddings
    # Now that a key exists, no key, a wrong key and the node token are refused...
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="herd-wrong", max_retries=0) \
            .chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=fleet.url).chat(model=MODEL, messages=MSG)
    assert refused.value.status_code == 401
    no_key = chat(fleet.url, None)
    assert no_key.status_code == 401 and "API key" in no_key.json()["error"]
    assert chat(fleet.url, NODE).status_code == 401
    openai_shape = httpx.post(f"{fleet.url}/v1/chat/completions",
                              json={"model": MODEL, "messages": MSG}, timeout=30)
    assert openai_shape.status_code == 401
    assert openai_shape.json()["error"]["code"] == "invalid_api_key"
    # ...and the admin token is a client credential too.
    assert chat(fleet.url, ADMIN).status_code == 200
    # The key's app tags its requests: traces, the apps table, the key's last use.
    traces = httpx.get(f"{fleet.url}/dashboard/api/traces", params={"tag": "chatbot"},
                       timeout=10).json()["traces"]
    assert len(traces) >= 4 and all(t["tags"][0] == "chatbot" for t in traces)
    wait_until(lambda: httpx.get(f"{fleet.url}/dashboard/api/apps", timeout=5)
               .json()["apps"].get("chatbot", {}).get("requests", 0) >= 4,
               message="chatbot in /dashboard/api/apps")
    listed = wait_until(lambda: [k for k in httpx.get(
        f"{fleet.url}/dashboard/api/keys", headers=admin(fleet), timeout=5).json()["keys"]
        if k["app"] == "chatbot" and k["last_used"]], message="the key's last use")
    assert set(listed[0]) == {"app", "requests_per_minute", "tokens_per_minute", "created",
                              "last_used"}


def test_managing_keys_needs_the_admin_token(fleet: Fleet) -> None:
    base = f"{fleet.url}/dashboard/api/keys"
    assert httpx.get(base, timeout=5).status_code == 401
    assert httpx.post(base, json={"app": "x"}, timeout=5).status_code == 401
    assert httpx.delete(f"{base}/x", timeout=5).status_code == 401
    refused = herd_keys(fleet, "list", token="")
    assert refused.returncode == 1 and "401" in refused.stderr
    bad = httpx.post(base, json={"app": "ok", "requests_per_minute": "lots"},
                     headers=admin(fleet), timeout=5)
    assert bad.status_code == 400 and "requests_per_minute" in bad.json()["error"]
    bad = httpx.post(base, json={"app": "<script>"}, headers=admin(fleet), timeout=5)
    assert bad.status_code == 400 and "app" in bad.json()["error"]
    made = httpx.post(base, json={"app": "once"}, headers=admin(fleet), timeout=5)
    assert made.status_code == 201
    secret = made.json()["key"]
    again = httpx.post(base, json={"app": "once"}, headers=admin(fleet), timeout=5)
    assert again.status_code == 409
    listing = herd_keys(fleet, "list")
    assert listing.returncode == 0 and "once" in listing.stdout
    assert secret not in listing.stdout
    assert secret not in httpx.get(base, headers=admin(fleet), timeout=5).text
    assert herd_keys(fleet, "revoke", "once").returncode == 0
    assert herd_keys(fleet, "revoke", "once").returncode == 1  # 404 the second time


def test_limits_hold_across_replicas(fleet: Fleet, replica: str) -> None:
    key = create(fleet, "flooder", rpm=3)
    codes = [chat(url, key).status_code for url in (fleet.url, replica, fleet.url, replica)]
    assert codes == [200, 200, 200, 429]
    over = chat(fleet.url, key)
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert "3 requests per minute" in over.json()["error"]
    oa = openai.OpenAI(base_url=f"{replica}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited:
        oa.chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    assert limited.value.code == "rate_limit_exceeded"
    # Tokens count from what the node reported at the end: one request spends the budget.
    tokens = create(fleet, "wordy", tpm=5)
    first = chat(replica, tokens)
    assert first.status_code == 200
    assert first.json()["prompt_eval_count"] + first.json()["eval_count"] >= 5
    after = chat(fleet.url, tokens)
    assert after.status_code == 429 and "5 tokens per minute" in after.json()["error"]


def test_a_revoked_key_is_refused_by_every_replica(fleet: Fleet, replica: str) -> None:
    key = create(fleet, "leaked")
    wait_until(lambda: chat(replica, key).status_code == 200, message="the replica knows it")
    done = herd_keys(fleet, "revoke", "leaked")
    assert done.returncode == 0, done.stderr
    assert chat(fleet.url, key).status_code == 401  # the replica that revoked: at once
    wait_until(lambda: chat(replica, key).status_code == 401, timeout=5.0,
               message="the other replica refuses the revoked key")


def test_no_secret_reaches_a_log_and_the_node_line_holds_none(fleet: Fleet) -> None:
    key = create(fleet, "quiet")
    assert chat(fleet.url, key).status_code == 200
    assert chat(fleet.url, key + "x").status_code == 401
    output = fleet.router.output() + fleet.log()
    for secret in (key, ADMIN, NODE):
        assert secret not in output
    port = fleet.url.rsplit(":", 1)[1]
    assert (f'FLEET_NODE_TOKEN="$FLEET_NODE_TOKEN" herd-node --router-url '
            f"http://127.0.0.1:{port}") in output


def test_redis_password_is_masked_when_redis_is_unreachable(tmp_path: Path) -> None:
    url = f"redis://:hunter2-pass@127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [herd_bin(), "--redis-url", url, "--no-mdns", "--no-dashboard", "--host", "127.0.0.1",
         "--port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
    )
    assert done.returncode == 2
    output = done.stdout + done.stderr + (tmp_path / "logs" / "herd.jsonl").read_text()
    assert "hunter2-pass" not in output
    assert "redis://:***@127.0.0.1" in output


def _revoke_every_key(fleet: Fleet) -> None:
    listed = herd_keys(fleet, "--json", "list")
    assert listed.returncode == 0, listed.stderr
    for key in json.loads(listed.stdout)["keys"]:
        assert herd_keys(fleet, "revoke", key["app"]).returncode == 0


def _closed(url: str, revoked: str) -> bool:
    """No key and the revoked key both get 401, from the official clients, in each shape."""
    try:
        ollama.Client(host=url).chat(model=MODEL, messages=MSG)
        return False
    except ollama.ResponseError as refused:
        if refused.status_code != 401:
            return False
    try:
        openai.OpenAI(base_url=f"{url}/v1", api_key=revoked, max_retries=0) \
            .chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
        return False
    except openai.AuthenticationError as refused:
        assert refused.code == "invalid_api_key"
    plain = chat(url, None)
    return plain.status_code == 401 and isinstance(plain.json()["error"], str)


def test_revoking_the_last_key_keeps_every_replica_closed_until_an_admin_opens(
    fleet: Fleet, replica: str,
) -> None:
    _revoke_every_key(fleet)
    key = create(fleet, "last-one")
    wait_until(lambda: chat(replica, key).status_code == 200, message="the replica knows it")
    assert herd_keys(fleet, "revoke", "last-one").returncode == 0
    started = time.monotonic()
    wait_until(lambda: chat(replica, key).status_code == 401, timeout=5.0,
               message="the other replica refuses the revoked key")
    assert time.monotonic() - started < 1.0
    assert chat(replica, None).status_code == 401  # and, its last key gone, stays closed
    # Past a resync interval nothing has reopened it: closed on both, to both clients.
    time.sleep(0.6)
    assert _closed(fleet.url, key) and _closed(replica, key)
    assert chat(replica, ADMIN).status_code == 200  # the admin token still works
    listing = herd_keys(fleet, "list")
    assert listing.returncode == 0 and "client_auth keys" in listing.stdout
    body = httpx.get(f"{replica}/dashboard/api/keys", headers=admin(fleet), timeout=5).json()
    assert (body["client_auth"], body["inference_open"], body["keys"]) == ("keys", False, [])

    opened = herd_keys(fleet, "open")
    assert opened.returncode == 0 and "client_auth open" in opened.stdout, opened.stderr
    assert ollama.Client(host=fleet.url).chat(model=MODEL, messages=MSG).message.content
    started = time.monotonic()
    wait_until(lambda: chat(replica, None).status_code == 200, timeout=5.0,
               message="the replica opens")
    assert time.monotonic() - started < 1.0
    closed = herd_keys(fleet, "close")  # closed with no key at all: only the tokens pass
    assert closed.returncode == 0 and "client_auth keys" in closed.stdout, closed.stderr
    assert chat(fleet.url, None).status_code == 401 and chat(fleet.url, ADMIN).status_code == 200
    assert herd_keys(fleet, "open").returncode == 0
    assert chat(fleet.url, None).status_code == 200
    # A key made while open closes the fleet again, the other replica within a second.
    again = create(fleet, "next-one")
    started = time.monotonic()
    wait_until(lambda: chat(replica, None).status_code == 401, timeout=5.0,
               message="the replica closes")
    assert time.monotonic() - started < 1.0
    assert chat(replica, again).status_code == 200
    refused = herd_keys(fleet, "open")
    assert refused.returncode == 1 and "409" in refused.stderr and "revoke" in refused.stderr
    assert herd_keys(fleet, "revoke", "next-one").returncode == 0
    assert herd_keys(fleet, "open").returncode == 0


def _metric(url: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and ",".join(sorted(found.group(1).split(","))) == wanted:
            return float(found.group(2))
    return 0.0


def _apps(url: str) -> dict[str, dict[str, int]]:
    apps: dict[str, dict[str, int]] = httpx.get(f"{url}/dashboard/api/apps",
                                                timeout=10).json()["apps"]
    return apps


def test_refusals_show_per_app_in_usage_apps_and_metrics(fleet: Fleet, replica: str) -> None:
    name = "herd_rejected_requests_total"
    none_before = _apps(fleet.url).get("(none)", {}).get("unauthorized", 0)
    metric_before = _metric(fleet.url, name, app="(none)", code="401")
    key = create(fleet, "counted", rpm=1)
    assert chat(fleet.url, key).status_code == 200
    assert chat(fleet.url, key).status_code == 429
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=key, max_retries=0) \
            .chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    assert chat(fleet.url, None).status_code == 401
    assert chat(fleet.url, key + "x").status_code == 401

    apps = _apps(fleet.url)
    assert apps["counted"]["rate_limited"] == 2 and apps["counted"]["rejected"] >= 2
    assert apps["counted"]["requests"] == 3
    assert apps["(none)"]["unauthorized"] == none_before + 2
    usage = httpx.get(f"{fleet.url}/dashboard/api/usage", timeout=10).json()
    assert usage["fleet"]["rate_limited"] >= 2 and usage["fleet"]["unauthorized"] >= 2
    assert _metric(fleet.url, name, app="counted", code="429") == 2
    assert _metric(fleet.url, name, app="(none)", code="401") == metric_before + 2
    # A refusal on the other replica reaches the fleet-wide usage with its next stats flush.
    assert chat(replica, None).status_code == 401
    wait_until(lambda: _apps(fleet.url)["(none)"]["unauthorized"] == none_before + 3,
               timeout=5.0, message="the replica's refusal in the fleet's usage")
    assert herd_keys(fleet, "revoke", "counted").returncode == 0
    assert herd_keys(fleet, "open").returncode == 0
