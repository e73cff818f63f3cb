"""Settings: environment, flags, types, choices, and the docs listing every field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import (
    RUNTIME_FIELDS,
    Settings,
    SettingsError,
    document,
    env_name,
    setting_fields,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_defaults_match_the_existing_tool() -> None:
    s = Settings.load(environ={})
    assert (s.port, s.max_retries, s.heartbeat_interval) == (11435, 2, 5.0)
    assert (s.heartbeat_timeout, s.heartbeat_offline, s.stale_timeout) == (15.0, 30.0, 600.0)
    assert s.context_protection == "strip"
    assert s.auto_pull is False
    assert s.data_path == Path("~/.fleet-manager").expanduser()


def test_environment_then_flags_win() -> None:
    env = {
        "FLEET_PORT": "9000", "FLEET_MDNS_INTERFACES": "127.0.0.1, ::1", "FLEET_AUTO_PULL": "yes"
    }
    s = Settings.load(environ=env, port=9100, host=None)
    assert s.port == 9100  # the flag wins
    assert s.host == "0.0.0.0"  # an unset flag keeps the default
    assert s.mdns_interfaces == ("127.0.0.1", "::1")
    assert s.auto_pull is True


def test_router_url_uses_the_compatible_variable_name() -> None:
    assert env_name("router_urls") == "FLEET_ROUTER_URL"
    s = Settings.load(environ={"FLEET_ROUTER_URL": "http://a:11435,http://b:11435"})
    assert s.router_urls == ("http://a:11435", "http://b:11435")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("port", "eleven", "port must be an integer"),
        ("auto_pull", "maybe", "auto_pull must be a boolean"),
        ("context_protection", "drop", "must be one of strip, warn, passthrough"),
        ("max_retries", 2.5, "max_retries must be an integer"),
        ("nonsense", 1, "unknown setting"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    name: str, value: object, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ={}, **{name: value})


def test_settings_are_frozen() -> None:
    s = Settings.load(environ={})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    assert s.replace(max_retries="3").max_retries == 3


def test_every_field_has_help_and_runtime_fields_exist() -> None:
    for f in setting_fields():
        assert len(f.metadata["help"]) > 15, f.name
    assert {"auto_pull", "max_retries", "context_protection"} <= RUNTIME_FIELDS
    assert "redis_url" not in RUNTIME_FIELDS


def test_docs_list_every_setting() -> None:
    text = DOCS.read_text()
    missing = [env_name(f.name) for f in setting_fields() if f"`{env_name(f.name)}`" not in text]
    assert not missing, f"docs/settings.md does not document: {missing}"


def test_docs_page_is_the_generated_one() -> None:
    assert DOCS.read_text() == document(), (
        "docs/settings.md is stale: python -m shared.settings > docs/settings.md"
    )
