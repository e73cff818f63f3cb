"""The router's OpenAPI document, checked by schemathesis against a real router and simulators.

Every operation gets a bounded number of generated requests (valid ones and, where the
document allows it, invalid ones). No answer may be a 5xx, and every answer must match
what the document says for its status code. Examples are derandomized, so a run is
repeatable, and shrinking is off: a failure is reported as generated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.proxy_fleet import Fleet, start_fleet

pytestmark = pytest.mark.e2e

ADMIN = "contract-admin"
MODEL = "llama3.2:3b"
EXAMPLES = 5  # per operation and mode: ~40 operations in about half a minute
# An endless stream: a generated request would never end.
SKIPPED = {"/dashboard/events"}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("contract")
    fast_pull = ["--pull-seconds-per-gb", "0.01"]  # generated pulls of made-up names
    with start_fleet(tmp, redis_url, {"n0": fast_pull, "n1": fast_pull},
                     env={"FLEET_ADMIN_TOKEN": ADMIN}) as running:
        httpx.post(f"{running.sim_url('n0')}/api/generate",
                   json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        running.heartbeat_all()
        # one real request, so traces, usage and trends have something to describe
        answer = httpx.post(f"{running.url}/api/generate", timeout=30,
                            json={"model": MODEL, "prompt": "hi", "stream": False})
        assert answer.status_code == 200, answer.text
        yield running


def _exercise(operation: Any, mode: GenerationMode, base_url: str) -> list[str]:
    """Run the operation's generated cases; the failures, one line each."""
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {ADMIN}"}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:  # checks failed: keep going, report them all
            failures.extend(
                f"{operation.label} [{mode.value}] {response.status_code}: {failure.title}: "
                f"{failure.message.strip()[:300]}" for failure in group.exceptions)
        except Failure as failure:
            failures.append(f"{operation.label} [{mode.value}] {response.status_code}: "
                            f"{failure.title}: {failure.message.strip()[:300]}")

    # Unsatisfiable: nothing in this operation can be made invalid (no parameters, no body)
    with contextlib.suppress(Unsatisfiable):
        run()
    return failures


def test_every_operation_keeps_to_the_document(fleet: Fleet) -> None:
    schema = schemathesis.openapi.from_url(f"{fleet.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    # the inference paths are in the document, not only Litestar's own routes
    assert {"/api/chat", "/api/generate", "/api/embed", "/api/embeddings",
            "/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= paths
    assert {"/fleet/status", "/dashboard/api/health", "/api/tags", "/v1/models"} <= paths
    failures: list[str] = []
    exercised = 0
    for operation in operations:
        if operation.path in SKIPPED:
            continue
        exercised += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _exercise(operation, mode, fleet.url)
    assert exercised >= 35
    assert failures == [], "\n".join(failures)


def test_a_model_name_with_a_control_character_gets_a_clear_error(fleet: Fleet) -> None:
    """Such a name was echoed in X-Fleet-Requested-Model, and the server dropped the
    connection instead of answering; now it is refused as a name, in Ollama's shape."""
    answer = httpx.post(f"{fleet.url}/api/chat", timeout=10,
                        json={"model": "odd\x1dname", "messages": []})
    assert answer.status_code == 400
    assert "model" in answer.json()["error"]
    assert "\x1d" not in answer.headers.get("X-Fleet-Requested-Model", "")
