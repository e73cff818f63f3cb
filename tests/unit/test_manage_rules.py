"""Model management's pure rules: what a fan-out's outcome answers, a blob digest's form,
and when a progress answer ended in success."""

from __future__ import annotations

import pytest

from services.router.api.progress import succeeded
from services.router.fleet.manage import Outcome, blob_digest
from shared.errors import BadRequest, NoNodeAvailable, NotFound, UpstreamError

pytestmark = pytest.mark.unit


def test_every_node_reached_did_it_is_success() -> None:
    assert Outcome(done=("a", "b"), absent=("c",)).error("delete m", "m", "gone") is None
    # offline nodes are named in a header, not an error, when some node did it
    assert Outcome(done=("a",), offline=("z",)).error("delete m", "m", "gone") is None


def test_any_failure_is_an_error_naming_what_was_done_and_what_failed() -> None:
    outcome = Outcome(done=("a",), failed=(("b", 500, "disk on fire"), ("c", 0, "refused")),
                      headers={"X-Herd-Nodes": "a", "X-Herd-Failed-Nodes": "b,c"})
    error = outcome.error("delete m:latest", "m:latest", "gone")
    assert isinstance(error, UpstreamError)
    assert error.message == "delete m:latest; done on a; failed on b: disk on fire; c: refused"
    assert error.headers["X-Herd-Failed-Nodes"] == "b,c"
    # a request every node refused as such is the client's error
    refused = Outcome(failed=(("b", 400, "bad name"),)).error("copy x to y", "x", "gone")
    assert isinstance(refused, BadRequest)
    partial = Outcome(done=("a",), failed=(("b", 400, "bad"),)).error("copy", "x", "gone")
    assert isinstance(partial, UpstreamError)


def test_nobody_having_it_is_a_404_and_only_offline_nodes_a_503() -> None:
    missing = Outcome(absent=("a", "b")).error("delete m", "m", "model 'm' not found")
    assert isinstance(missing, NotFound) and missing.message == "model 'm' not found"
    offline = Outcome(absent=("a",), offline=("z",)).error("delete m", "m", "gone")
    assert isinstance(offline, NoNodeAvailable)
    assert "z" in offline.message


def test_blob_digests_take_ollamas_two_spellings_and_nothing_else() -> None:
    hexdigest = "ab" * 32
    assert blob_digest(f"sha256:{hexdigest}") == f"sha256:{hexdigest}"
    assert blob_digest(f"sha256-{hexdigest}") == f"sha256-{hexdigest}"
    for bad in ("sha256:xyz", f"md5:{hexdigest}", f"sha256:{hexdigest}/../x", ""):
        with pytest.raises(BadRequest):
            blob_digest(bad)


def test_success_is_read_from_the_last_progress_line() -> None:
    assert succeeded(b'{"status":"writing manifest"}\n{"status":"success"}\n')
    assert succeeded(b'{"status": "success"}')
    assert not succeeded(b'{"status":"success"}\n{"error":"disk full"}\n')
    assert not succeeded(b'{"status":"pulling"}\n')
    assert not succeeded(b"")
    assert not succeeded(b"not json")
