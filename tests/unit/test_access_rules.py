"""Access rules without I/O: key fields, names, masked URLs, body decoding, the node line."""

from __future__ import annotations

import pytest

from services.router.fleet.client_keys import digest, valid_app, validate_new_key
from services.router.server import node_command
from shared.bodies import decode_json, decode_object
from shared.errors import BadRequest
from shared.models import valid_model_name
from shared.redisconn import mask_url
from shared.settings import Settings, SettingsError, coerce


@pytest.mark.parametrize(("body", "named"), [
    ({"app": 5}, "app"),
    ({"app": "<script>"}, "app"),
    ({"app": "a b"}, "app"),
    ({"app": "x" * 65}, "app"),
    ({"app": "ok", "requests_per_minute": "60"}, "requests_per_minute"),
    ({"app": "ok", "requests_per_minute": True}, "requests_per_minute"),
    ({"app": "ok", "tokens_per_minute": -1}, "tokens_per_minute"),
    ({"app": "ok", "tokens_per_minute": 1.5}, "tokens_per_minute"),
    ({"app": "ok", "tokens_per_minute": 10**30}, "tokens_per_minute"),
    ({"app": "ok", "secret": "mine"}, "secret"),
    ([1], "JSON object"),
])
def test_a_bad_key_request_names_its_field(body: object, named: str) -> None:
    with pytest.raises(BadRequest, match=named):
        validate_new_key(body)


def test_a_good_key_request() -> None:
    assert validate_new_key({"app": "chat-bot.v2", "requests_per_minute": 60}) == (
        "chat-bot.v2", 60, 0)
    assert valid_app("a") == "a"


def test_digest_is_sha256_hex_and_never_the_secret() -> None:
    made = digest("herd-abc")
    assert len(made) == 64 and "herd-abc" not in made
    assert digest("herd-abc") == made != digest("herd-abd")


@pytest.mark.parametrize("name", [
    "llama3.2:3b", "qwen3:8b", "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M",
    "library/llama3@sha256:abc", "nomic-embed-text:latest", "a+b",
])
def test_model_names_ollama_has(name: str) -> None:
    assert valid_model_name(name)


@pytest.mark.parametrize("name", [
    "<script>", "a b", "llama\r\nX-Injected: 1", "../etc/passwd", "a/../b", "a//b", "",
    ".hidden", "x" * 201, "\u00e9t\u00e9", "a\x00",
])
def test_model_names_refused(name: str) -> None:
    assert not valid_model_name(name)


def test_redis_urls_are_shown_without_their_password() -> None:
    assert mask_url("redis://:hunter2@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert mask_url("rediss://herd:hunter2@r.lan:6380/1?ssl_ca_certs=/c.pem") == (
        "rediss://herd:***@r.lan:6380/1?ssl_ca_certs=/c.pem")
    assert mask_url("redis://10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"
    assert "hunter2" not in mask_url("redis://:hunter2@[::1:6379/0")


@pytest.mark.parametrize(("raw", "says"), [
    (b"[" * 20_000, "nested too deeply"),
    (b'{"model": "\xff"}', "UTF-8"),
    (b"{", "invalid JSON"),
    (b"", "missing"),
    (b"[1]", "JSON object"),
])
def test_every_bad_body_is_a_400(raw: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        decode_object(raw)


def test_good_bodies_decode() -> None:
    assert decode_object(b'{"a": [1]}') == {"a": [1]}
    assert decode_json(b"[" * 100 + b"]" * 100) is not None


def test_settings_refuse_non_finite_numbers() -> None:
    for value in ("nan", "inf", float("nan"), float("-inf")):
        with pytest.raises(SettingsError, match="queue_timeout"):
            coerce("queue_timeout", value)


def test_the_node_line_holds_no_secret() -> None:
    plain = Settings.load(environ={}, host="10.1.2.3", port=11435)
    assert node_command(plain) == "herd-node --router-url http://10.1.2.3:11435"
    locked = Settings.load(environ={"FLEET_NODE_TOKEN": "t0ps3cret"}, host="10.1.2.3")
    line = node_command(locked)
    assert line == ('FLEET_NODE_TOKEN="$FLEET_NODE_TOKEN" '
                    "herd-node --router-url http://10.1.2.3:11435")
    assert "t0ps3cret" not in line
