"""The table of first Ollama versions: parsing, ordering, path lookup, and the simulator
registering exactly the paths its version serves."""

from __future__ import annotations

import pytest

from services.sim.config import SimConfig
from services.sim.routes import served_routes
from shared.endpoints import (
    DEV_BUILD,
    ENDPOINTS,
    OllamaVersion,
    endpoint_for,
    parse_version,
    serves,
    since,
)

pytestmark = pytest.mark.unit


def test_versions_parse_in_the_forms_ollama_reports() -> None:
    assert parse_version("0.14.0") == OllamaVersion(0, 14, 0)
    assert parse_version("v0.5.7") == OllamaVersion(0, 5, 7)
    assert parse_version(" 0.14.0-rc11 ") == OllamaVersion(0, 14, 0, "rc11")
    assert parse_version("0.3") == OllamaVersion(0, 3, 0)
    assert parse_version("1.2.3+build.5") == OllamaVersion(1, 2, 3)
    assert str(parse_version("0.20.0-rc1")) == "0.20.0-rc1"
    for bad in ("", "latest", "0", "0.x.1", "1.2.3.4", "0.1.-1"):
        with pytest.raises(ValueError, match="not an Ollama version"):
            parse_version(bad)


def test_ordering_is_numeric_and_puts_pre_releases_first() -> None:
    ordered = ["0.1.9", "0.1.10", "0.9.6", "0.13.3-rc0", "0.13.3-rc1", "0.13.3", "0.14.0-rc2",
               "0.14.0-rc10", "0.14.0", "0.20.0", "1.0.0"]
    parsed = [parse_version(v) for v in ordered]
    assert sorted(reversed(parsed)) == parsed
    assert parse_version("0.14.0") >= parse_version("0.14.0")
    assert parse_version("0.14.0-rc9") < parse_version("0.14.0-rc10")


def test_the_verified_first_versions() -> None:
    assert str(since("/v1/responses")) == "0.13.3"
    assert str(since("/v1/messages")) == "0.14.0"
    assert str(since("/v1/audio/transcriptions")) == "0.20.0"
    assert str(since("/v1/audio/speech")) == "0.40.8"  # from the changelog
    assert since("/v1/messages/count_tokens") is None
    assert str(since("/api/blobs/sha256:" + "a" * 64)) == "0.1.10"
    assert str(since("/api/chat")) == "0.1.14"
    assert since("/no/such/path") is None


def test_serves_at_and_after_the_first_version_only() -> None:
    assert serves("0.13.3", "/v1/responses") and serves("0.32.15", "/v1/responses")
    assert not serves("0.13.2", "/v1/responses")
    assert not serves("0.13.3-rc1", "/v1/responses")  # that release candidate lacked it
    assert not serves("0.13.9", "/v1/messages") and serves("0.14.0", "/v1/messages")
    assert not serves("0.19.0", "/v1/audio/transcriptions")
    assert serves(parse_version("0.20.0"), "/v1/audio/transcriptions")
    assert not serves("0.40.7", "/v1/audio/speech") and serves("0.40.8", "/v1/audio/speech")
    assert not serves("99.0.0", "/v1/messages/count_tokens")
    assert not serves("0.20.0", "/unknown")


def test_a_dev_build_serves_everything_ollama_has() -> None:
    assert parse_version("0.0.0") == DEV_BUILD
    assert serves("0.0.0", "/v1/messages") and serves("0.0.0", "/api/chat")
    assert not serves("0.0.0", "/v1/messages/count_tokens")


def test_paths_with_parameters_match_their_rows() -> None:
    row = endpoint_for("/v1/models/library/qwen3:8b")
    assert row is not None and row.path == "/v1/models/{model}"
    models = endpoint_for("/v1/models")
    assert models is not None and models.path == "/v1/models"
    assert endpoint_for("/api/blobs/") is None  # a parameter cannot be empty
    assert len({e.path for e in ENDPOINTS}) == len(ENDPOINTS)


@pytest.mark.parametrize(
    "version", ["0.1.13", "0.2.0", "0.13.2", "0.13.3", "0.14.0", "0.20.0", "0.40.8"])
def test_the_simulator_registers_exactly_what_its_version_serves(version: str) -> None:
    registered = {r.path.split("{", 1)[0] + ("x" if "{" in r.path else "")
                  for r in served_routes(SimConfig(version=version))
                  if not r.path.startswith("/sim/")}
    for endpoint in ENDPOINTS:
        probe = endpoint.path.split("{", 1)[0] + ("x" if "{" in endpoint.path else "")
        assert (probe in registered) == endpoint.served_by(version), (version, endpoint.path)


def test_the_default_simulator_serves_every_row_ollama_serves() -> None:
    version = SimConfig().version
    assert all(e.served_by(version) for e in ENDPOINTS if e.first is not None)
    routes = served_routes(SimConfig())
    for route in routes:  # every Ollama path the simulator has is in the table
        probe = route.path.split("{", 1)[0] + ("x" if "{" in route.path else "")
        assert route.path.startswith("/sim/") or endpoint_for(probe) is not None, route.path
    assert "/v1/audio/speech" in {r.path for r in routes}
    assert "/v1/audio/speech" not in {r.path for r in served_routes(SimConfig(version="0.40.7"))}
