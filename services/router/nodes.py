"""The one boundary to a node: forward, list, show, and model management, over one client.

Every call to a node's Ollama goes through `Nodes`, over the keep-alive connections of
`nodeclient.NodeClient`, and its failures are translated here: `UpstreamFailure` for the
request path (the node failed before anything reached the client: retry elsewhere), and
the API's own errors (`UpstreamError`, `NodeNotFound`) for model management.

An inference answer that is not a success is classified here and nowhere else
(`classify`), by whom it blames (`Blame`):
- the request itself: a 4xx other than 404 is returned as the answer, unchanged; a 5xx
  whose message is one of Ollama's refusals of the request (an option of the wrong type,
  a template that does not parse, a `format` it cannot use) is `RequestRefused`, and one
  saying the model does not fit in memory with what the request asked is `TooLarge`,
  which another node with more memory may still serve;
- nobody: a 404 for the model is `ModelMissing` (the registry was stale), a 404 for the
  path itself (Ollama's router's plain-text `404 page not found`: an Ollama too old for
  the endpoint) `PathMissing`, a 503 "server busy" a full node;
- the model on that node: any other 5xx (a runner that crashed, ran out of memory while
  running, a model that does not load) and an answer that never came;
- the node: a connection refused, reset or never made.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple

import msgspec

from services.router.nodeclient import NodeBroken, NodeClient, NodeResponse
from shared.errors import NodeNotFound, UpstreamError
from shared.models import NodeState

__all__ = [
    "FANOUT_TIMEOUT",
    "Blame",
    "ModelMissing",
    "NodeAnswer",
    "NodeProgress",
    "NodeReply",
    "NodeResponse",
    "Nodes",
    "PathMissing",
    "ProgressBroken",
    "RequestRefused",
    "TooLarge",
    "UpstreamFailure",
    "classify",
    "node_message",
    "progress_lines",
]

FANOUT_TIMEOUT = 3.0  # a slow node must not hold up the whole catalogue
PULL_CONNECT_TIMEOUT = 10.0
# A pull reports progress every few hundred ms; a node silent this long has stalled.
PULL_SILENCE_TIMEOUT = 300.0
DELETE_TIMEOUT = 30.0  # a delete, a copy, a blob's HEAD: bookkeeping on the node
# An upload waits on the node only while its socket buffer is full, and for the answer
# once the body is sent (Ollama hashes as the bytes arrive, so that answer is quick).
UPLOAD_SILENCE_TIMEOUT = 300.0

_decode = msgspec.json.Decoder().decode


MAX_MESSAGE = 1000  # characters of a node's error message kept and passed on


class NodeAnswer(NamedTuple):
    """A node's short answer to a model-management call: its status, and its error
    message when it refused (empty on success)."""

    status: int
    message: str


class Blame(enum.StrEnum):
    """Whom a failed attempt counts against (the registry keeps the counts)."""

    NODE = "node"  # unreachable: refused, reset, no connection; degrades the node
    MODEL = "model"  # the node answered, this model failed there: counts for node:model
    NOBODY = "nobody"  # the request's own doing, a stale registry, a busy node


class UpstreamFailure(Exception):
    """The node failed before anything reached the client: retry elsewhere."""

    blame = Blame.NODE

    def __init__(self, reason: str, status: int = 0, body: bytes = b"", *,
                 blame: Blame | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body
        if blame is not None:
            self.blame = blame


class ModelMissing(UpstreamFailure):
    """The node answered 404 for a model the registry said it had: a routing miss (the
    registry is stale), not the node failing, and not yet the client's 404."""

    blame = Blame.NOBODY


class PathMissing(UpstreamFailure):
    """The node answered 404 for the path itself, not for a model: its Ollama does not
    serve this endpoint (older than the version table says, or built without it)."""

    blame = Blame.NOBODY


class RequestRefused(UpstreamFailure):
    """The node refused the request itself: the client's error, with the node's own
    `message` and status, as the same Ollama alone would have answered. Another node
    would refuse it too: not retried, and no node's fault."""

    blame = Blame.NOBODY

    def __init__(self, reason: str, status: int, body: bytes, message: str) -> None:
        super().__init__(reason, status, body)
        self.message = message


class TooLarge(RequestRefused):
    """The model does not fit in the node's memory with what the request asked (its
    num_ctx): a node with more memory may serve it. `need_gb` is the node's own figure
    (rounded down), 0 when its words give none."""

    def __init__(self, reason: str, status: int, body: bytes, message: str,
                 need_gb: float) -> None:
        super().__init__(reason, status, body, message)
        self.need_gb = need_gb


class NodeReply:
    """A node's answer to an inference request, its headers in, the body to come.

    Its reads raise UpstreamFailure saying how the node failed (broke off, or said nothing
    for the stale timeout), so the request path never handles the client's own errors.
    """

    __slots__ = ("_response", "content_type", "node_id", "stale_timeout", "status")

    def __init__(self, response: NodeResponse, node_id: str, stale_timeout: float) -> None:
        self._response, self.node_id, self.stale_timeout = response, node_id, stale_timeout
        self.status = response.status
        self.content_type: str = response.headers.get("content-type", "application/json")

    async def read(self) -> bytes:
        """The whole body; the connection goes back for reuse."""
        response = self._response
        try:
            return await response.read()
        except (NodeBroken, TimeoutError) as exc:
            response.close()
            raise UpstreamFailure(f"{self.node_id}: {type(exc).__name__} {exc}") from exc
        finally:
            response.release()

    async def first(self) -> bytes:
        """A stream's first part; UpstreamFailure if it fails or ends before any output (the
        client has nothing yet: retry elsewhere)."""
        response = self._response
        try:
            first = await response.readany()
        except (NodeBroken, TimeoutError) as exc:
            response.close()
            raise UpstreamFailure(f"{self.node_id}: {type(exc).__name__} {exc}") from exc
        if not first:
            response.close()
            raise UpstreamFailure(f"{self.node_id} closed the stream without output")
        return first

    async def readany(self) -> bytes:
        """A stream's next part, b"" at its end; UpstreamFailure saying why it broke off."""
        try:
            return await self._response.readany()
        except TimeoutError as exc:
            raise UpstreamFailure(
                f"no output from {self.node_id} for {self.stale_timeout:g} s") from exc
        except NodeBroken as exc:
            raise UpstreamFailure(
                f"{self.node_id} broke off the stream: {type(exc).__name__} {exc}") from exc

    def release(self) -> None:
        """Done: a complete answer gives its connection back for reuse."""
        self._response.release()

    def close(self) -> None:
        """Drop the connection: the node stops generating."""
        self._response.close()


class ProgressBroken(UpstreamError):
    """A node's progress answer broke off (or fell silent) after it began; `detail` says
    how, in the node client's words."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail or "the node stopped answering")
        self.detail = detail


class NodeProgress:
    """A node's progress answer (pull, push, create), its headers in, the lines to come.

    Its reads raise ProgressBroken, so its callers never handle the node client's errors.
    """

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: NodeResponse) -> None:
        self._response = response
        self.status, self.headers = response.status, response.headers

    async def read(self) -> bytes:
        """The whole answer (the caller releases it)."""
        try:
            return await self._response.read()
        except (NodeBroken, TimeoutError) as exc:
            raise ProgressBroken(str(exc)) from exc

    async def readany(self) -> bytes:
        """The next part, b"" at its end."""
        try:
            return await self._response.readany()
        except (NodeBroken, TimeoutError) as exc:
            raise ProgressBroken(str(exc)) from exc

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()


# Ollama's words for a model that does not fit (server/sched.go, llm/server.go, the MLX
# runner, llama-server's start-up): the figure, when given, is what the load needs.
_SIZE = r"(\d+(?:\.\d+)?) ?([KMGT]i?B|B)\b"
_TOO_LARGE = (
    re.compile(r"model requires more system memory \(" + _SIZE, re.IGNORECASE),
    re.compile(r"model requires " + _SIZE + r" but only .* available", re.IGNORECASE),
    re.compile(r"model requires more system memory", re.IGNORECASE),
    re.compile(r"unable to load full model on GPU", re.IGNORECASE),
    re.compile(r"reported out-of-memory during startup", re.IGNORECASE),
)
# Ollama's 500s that refuse the request itself: api.Options.FromMap ("option \"num_ctx\"
# must be of type integer"), a `template` Go cannot parse or run, a `format` it cannot use.
_REFUSED = (
    re.compile(r'^option "[^"]*" must be of type'),
    re.compile(r"^template: "),
    re.compile(r"^invalid format: "),
)
_BUSY = re.compile(r"server busy", re.IGNORECASE)  # ErrMaxQueue's 503
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def node_message(body: bytes) -> str:
    """The error message in a node's answer: Ollama's `{"error": "..."}`, its OpenAI
    endpoints' `{"error": {"message": "..."}}`, else the text itself."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            return error.strip()[:MAX_MESSAGE]
    return body[:MAX_MESSAGE].decode(errors="replace").strip()


def _lower_bound_gb(number: str, unit: str) -> float:
    """A printed size as GB, less half its last digit: Ollama rounds its figures."""
    places = len(number.partition(".")[2])
    unit_bytes: float = _UNITS[unit.upper()]
    return max(0.0, float(number) - 0.5 * 10.0**-places) * unit_bytes / 1e9


def classify(node_id: str, status: int, body: bytes) -> UpstreamFailure:
    """What a node's failed answer (a 5xx, with its body) means for the request path."""
    message = node_message(body)
    reason = f"{node_id} answered {status}: {message}" if message else \
        f"{node_id} answered {status}"
    for pattern in _TOO_LARGE:
        found = pattern.search(message)
        if found is not None:
            need = _lower_bound_gb(*found.groups()) if pattern.groups else 0.0
            return TooLarge(reason, status, body, message, need)
    if any(pattern.search(message) for pattern in _REFUSED):
        return RequestRefused(reason, status, body, message)
    if status == 503 and _BUSY.search(message):
        return UpstreamFailure(reason, status, body, blame=Blame.NOBODY)
    return UpstreamFailure(reason, status, body, blame=Blame.MODEL)


async def progress_lines(response: NodeProgress) -> AsyncIterator[bytes]:
    """A streamed NDJSON body, a line at a time (pull progress)."""
    pending = b""
    while chunk := await response.readany():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


class Nodes:
    """The replica's connections to every node, and what it asks of them."""

    def __init__(self) -> None:
        self.client = NodeClient()

    def close(self) -> None:
        self.client.close()

    # --- the request path -------------------------------------------------------------

    async def forward(
        self, node: NodeState, path: str, payload: bytes, *, connect_timeout: float,
        stale_timeout: float, content_type: bytes = b"application/json", extra: bytes = b"",
    ) -> NodeReply:
        """POST an inference request; returns the answer once its headers arrived.

        A success, or the request's own 4xx (the client gets it as it is). Raises
        ModelMissing on a 404 for the model (Ollama's handlers answer JSON), PathMissing on
        its router's plain-text 404 for the path, what `classify` makes of a 5xx, and
        UpstreamFailure on a connection refused, reset or not made (the node's fault) or no
        answer within `stale_timeout` (the model's).
        """
        try:
            response = await self.client.post(
                node.ollama_url, path, payload,
                connect_timeout=connect_timeout, read_timeout=stale_timeout,
                content_type=content_type, extra=extra,
            )
        except TimeoutError as exc:
            # Connected, but no answer: a load or a runner that hangs (the model's), unless
            # it happens across models (the registry then blames the node).
            raise UpstreamFailure(f"no answer from {node.node_id} within {stale_timeout:g} s",
                                  blame=Blame.MODEL) from exc
        except NodeBroken as exc:
            raise UpstreamFailure(f"{node.node_id}: {exc}") from exc
        if response.status == 404:
            plain = response.headers.get("content-type", "").startswith("text/plain")
            try:
                body = await response.read() if plain else b""
            except (NodeBroken, TimeoutError):
                body = b""
            finally:
                response.release()
            if plain and body.strip() == b"404 page not found":
                raise PathMissing(f"{node.node_id} does not serve {path}", 404, body)
            raise ModelMissing(f"{node.node_id} does not have the model", 404)
        if response.status >= 500:
            try:
                body = await response.read()
            except (NodeBroken, TimeoutError):
                body = b""
            finally:
                response.release()
            raise classify(node.node_id, response.status, body)
        return NodeReply(response, node.node_id, stale_timeout)

    # --- the catalogue ----------------------------------------------------------------

    async def get_json(
        self, node: NodeState, path: str, within: float = FANOUT_TIMEOUT,
    ) -> dict[str, Any] | None:
        """A GET answered with a JSON object, or None if the node failed or said otherwise."""
        try:
            status, body = await self._whole(b"GET", node, path, b"", within)
            data = _decode(body) if status == 200 else None
        except (UpstreamError, msgspec.DecodeError):
            return None
        return data if isinstance(data, dict) else None

    async def post_whole(
        self, node: NodeState, path: str, payload: bytes, within: float,
    ) -> tuple[int, bytes]:
        """A POST whose whole answer is read; UpstreamError if the node cannot answer."""
        return await self._whole(b"POST", node, path, payload, within)

    # --- model management -------------------------------------------------------------

    async def pull(self, node: NodeState, model: str, body: dict[str, Any]) -> NodeProgress:
        """Start a pull; the caller reads the progress and releases the response."""
        return await self.progress(node, "/api/pull", msgspec.json.encode({**body, "model": model}),
                                   f"pull {model}")

    async def progress(self, node: NodeState, path: str, payload: bytes,
                       what: str) -> NodeProgress:
        """Start a pull, push or create (`what` names it in errors); the caller reads the
        progress and releases the response."""
        try:
            return NodeProgress(await self.client.request(
                b"POST", node.ollama_url, path, payload,
                connect_timeout=PULL_CONNECT_TIMEOUT, read_timeout=PULL_SILENCE_TIMEOUT,
            ))
        except (NodeBroken, TimeoutError) as exc:
            raise UpstreamError(f"cannot reach {node.node_id} to {what}: "
                                f"{_describe(exc)}") from exc

    async def pull_and_wait(self, node: NodeState, model: str) -> float:
        """Pull `model` onto `node` and return once the node has it, with its size in GB.

        Raises UpstreamError if the node cannot be reached, refuses, or reports an error in
        its progress (an unknown name, a full disk). The caller bounds the wait.
        """
        response = await self.pull(node, model, {"stream": True})
        total = 0
        try:
            if response.status >= 400:
                text = (await response.read())[:300].decode(errors="replace")
                raise UpstreamError(f"{node.node_id} refused to pull {model}: {text}")
            async for line in progress_lines(response):
                try:
                    progress = _decode(line)
                except msgspec.DecodeError:
                    continue
                if not isinstance(progress, dict):
                    continue
                if progress.get("error"):
                    raise UpstreamError(f"pull of {model} on {node.node_id}: {progress['error']}")
                if isinstance(progress.get("total"), int):
                    total = max(total, progress["total"])
                if progress.get("status") == "success":
                    return total / 1e9
            raise UpstreamError(f"pull of {model} on {node.node_id} ended without success")
        except ProgressBroken as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise UpstreamError(
                f"pull of {model} on {node.node_id} failed: {_describe(cause)}") from exc
        finally:
            response.close()

    async def delete(self, node: NodeState, model: str) -> None:
        """Delete `model` on `node`: NodeNotFound if it has no such model."""
        status, body = await self._whole(
            b"DELETE", node, "/api/delete", msgspec.json.encode({"model": model}),
            DELETE_TIMEOUT)
        if status == 404:
            raise NodeNotFound(f"model {model!r} not found on {node.node_id}")
        if status >= 400:
            text = body[:200].decode(errors="replace")
            raise UpstreamError(f"{node.node_id} refused to delete {model}: {status} {text}")

    async def manage(self, node: NodeState, method: bytes, path: str,
                     payload: bytes) -> NodeAnswer:
        """A delete or copy: the node's status and message; UpstreamError if it cannot
        answer."""
        status, data = await self._whole(method, node, path, payload, DELETE_TIMEOUT)
        return NodeAnswer(status, node_message(data) if status >= 400 else "")

    async def head_blob(self, node: NodeState, digest: str) -> NodeAnswer:
        """Whether the node has the blob: 200 if so, 404 if not."""
        status, data = await self._whole(b"HEAD", node, f"/api/blobs/{digest}", b"",
                                         DELETE_TIMEOUT)
        return NodeAnswer(status, node_message(data) if status >= 400 else "")

    async def upload_blob(
        self, node: NodeState, digest: str, body: AsyncIterable[bytes], length: int | None,
        connect_timeout: float,
    ) -> tuple[int, bytes]:
        """Stream an upload to the node as it arrives (never whole in memory); its status
        and answer. UpstreamError if the node cannot be reached or stops taking it."""
        try:
            return await _read_whole(await self.client.upload(
                b"POST", node.ollama_url, f"/api/blobs/{digest}", body, length,
                connect_timeout=connect_timeout, read_timeout=UPLOAD_SILENCE_TIMEOUT))
        except (NodeBroken, TimeoutError) as exc:
            raise UpstreamError(
                f"upload of {digest} to {node.node_id} failed: {_describe(exc)}") from exc

    # ---------------------------------------------------------------------------------

    async def _whole(
        self, method: bytes, node: NodeState, path: str, payload: bytes, within: float,
    ) -> tuple[int, bytes]:
        try:
            return await _read_whole(await self.client.request(
                method, node.ollama_url, path, payload,
                connect_timeout=within, read_timeout=within,
            ))
        except (NodeBroken, TimeoutError) as exc:
            raise UpstreamError(
                f"{node.node_id} did not answer {path}: {_describe(exc)}") from exc


async def _read_whole(response: NodeResponse) -> tuple[int, bytes]:
    """A node's whole answer and its status; the connection goes back to the pool."""
    try:
        return response.status, await response.read()
    finally:
        response.release()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
