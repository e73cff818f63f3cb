"""The key builder: one prefix, distinct families, model names with ':' kept apart, and on a
Redis Cluster one hash slot for all of them."""

from __future__ import annotations

import inspect

import pytest
from redis.crc import key_slot

from shared.keys import Keys, hash_tagged


def _all_keys(keys: Keys) -> list[str]:
    built = []
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or isinstance(method.__self__, type):  # for_redis
            continue
        params = len(inspect.signature(method).parameters)
        key = method(*(["n1", "llama3.2:3b"][:params]))
        if isinstance(key, list):  # a group of keys in a script's KEYS order
            assert name == "queue" and len(key) == 12
            continue  # each is built by its own method too
        built.append(key)
    return built


def test_every_key_is_under_the_prefix() -> None:
    built = _all_keys(Keys("p:"))
    assert built
    assert all(k.startswith("p:") for k in built)


def test_families_do_not_collide() -> None:
    built = _all_keys(Keys())
    assert len(built) == len(set(built))


def test_node_and_model_parts_stay_apart() -> None:
    keys = Keys()
    # "a:b" + "c" and "a" + "b:c" must not build the same slots key.
    assert keys.slots("a:b", "c") != keys.slots("a", "b:c")
    assert keys.slots("gpu-1", "qwen3:8b") == "herd:slots:gpu-1|qwen3:8b"


def test_scripts_touch_only_the_keys_they_are_given() -> None:
    """Every key a Lua script reads or writes comes from KEYS (Redis Cluster-safe): the first
    argument of each redis.call is KEYS[...] (or a loop variable over KEYS), except the
    channel of a PUBLISH."""
    import re
    from importlib import resources

    from shared.scripts import script_source

    names = [p.name[:-4] for p in resources.files("shared").joinpath("lua").iterdir()
             if p.name.endswith(".lua")]
    assert {"acquire", "leave", "reap_waiters"} <= set(names)
    for name in names:
        text = script_source(name)
        assert "--@include" not in text, name
        for command, first in re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", text):
            if command == "PUBLISH":
                continue
            allowed = first.startswith("KEYS[") or (
                first == "key" and "for i, key in ipairs(KEYS)" in text)
            assert allowed, f"{name}.lua: {command} on {first}"


@pytest.mark.parametrize(("prefix", "tagged"), [
    ("herd:", "{herd}:"),
    ("acme:herd:", "{acme:herd}:"),
    ("herd", "{herd}"),
    ("{tenant7}:herd:", "{tenant7}:herd:"),  # a tag of its own is kept
    ("a{}b:", "{a{}b}:"),  # '{}' is no tag (Redis hashes the whole key): wrapped
])
def test_the_prefix_becomes_the_hash_tag_on_a_cluster(prefix: str, tagged: str) -> None:
    assert hash_tagged(prefix) == tagged
    assert Keys.for_redis(prefix, cluster=True).prefix == tagged
    assert Keys.for_redis(prefix, cluster=False).prefix == prefix  # a single Redis: as is


def test_an_empty_prefix_is_refused_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        Keys.for_redis(":", cluster=True)


@pytest.mark.parametrize("prefix", ["herd:", "herdtest:0a1b2c:", "{t}:x:", "a}b{c:", "{"])
def test_every_key_shares_one_slot_on_a_cluster(prefix: str) -> None:
    """Every key a script, MULTI or pipeline may combine lives in one slot (redis-py's own
    CRC16), whatever node ids and model names (with braces too) go into it."""
    keys = Keys.for_redis(prefix, cluster=True)
    built = _all_keys(keys) + keys.queue("a{b}:7b") + [
        keys.slots("{gpu}", "{m}"), keys.counters("n}", "{"), keys.rate_tokens("{app}", 1)]
    assert {key_slot(k.encode()) for k in built} == {key_slot(keys.settings().encode())}
