"""The key builder: one prefix, distinct families, model names with ':' kept apart."""

from __future__ import annotations

import inspect

from shared.keys import Keys


def _all_keys(keys: Keys) -> list[str]:
    built = []
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_"):
            continue
        params = len(inspect.signature(method).parameters)
        key = method(*(["n1", "llama3.2:3b"][:params]))
        if isinstance(key, list):  # a group of keys in a script's KEYS order
            assert name == "queue" and len(key) == 7
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
