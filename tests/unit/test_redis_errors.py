"""Error replies keep LOADING, READONLY and NOSCRIPT apart; which errors mean "Redis away"."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.errors import StateRebuilding, StateUnavailable, error_body
from shared.fastredis import reply_error
from shared.redisconn import REDIS_UNAVAILABLE


@pytest.mark.parametrize(("message", "kind"), [
    ("NOSCRIPT No matching script. Please use EVAL.", NoScriptError),
    ("READONLY You can't write against a read only replica.", ReadOnlyError),
    ("LOADING Redis is loading the dataset in memory", BusyLoadingError),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", ResponseError),
])
def test_reply_errors_are_told_apart(message: str, kind: type[Exception]) -> None:
    error = reply_error(message)
    assert type(error) is kind
    assert str(error) == message


def test_away_errors_are_those_that_pass() -> None:
    assert isinstance(reply_error("LOADING x"), REDIS_UNAVAILABLE)
    assert isinstance(reply_error("READONLY x"), REDIS_UNAVAILABLE)
    assert isinstance(RedisConnectionError("gone"), REDIS_UNAVAILABLE)
    assert not isinstance(reply_error("WRONGTYPE x"), REDIS_UNAVAILABLE)
    assert not isinstance(reply_error("NOSCRIPT x"), REDIS_UNAVAILABLE)


def test_state_errors_are_503_with_retry_after_in_both_shapes() -> None:
    for error in (StateUnavailable(), StateRebuilding()):
        assert error.status_code == 503
        assert int(error.headers["Retry-After"]) > 0
        assert error_body("/api/chat", 503, error.message, error) == {"error": error.message}
        openai = error_body("/v1/chat/completions", 503, error.message, error)["error"]
        assert openai["type"] == "server_error" and openai["code"] == error.openai_code
    assert "rebuilt" in StateRebuilding().message
