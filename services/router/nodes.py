"""The one boundary to a node: forward, list, show, pull and delete, over one client.

Every call to a node's Ollama goes through `Nodes`, over the keep-alive connections of
`nodeclient.NodeClient`, and its failures are translated here: `UpstreamFailure` for the
request path (the node failed before anything reached the client: retry elsewhere), and
the API's own errors (`UpstreamError`, `NodeNotFound`) for model management.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from services.router.nodeclient import NodeBroken, NodeClient, NodeResponse
from shared.errors import NodeNotFound, UpstreamError
from shared.models import NodeState

__all__ = [
    "FANOUT_TIMEOUT",
    "ModelMissing",
    "NodeResponse",
    "Nodes",
    "UpstreamFailure",
    "progress_lines",
]

FANOUT_TIMEOUT = 3.0  # a slow node must not hold up the whole catalogue
PULL_CONNECT_TIMEOUT = 10.0
# A pull reports progress every few hundred ms; a node silent this long has stalled.
PULL_SILENCE_TIMEOUT = 300.0
DELETE_TIMEOUT = 30.0

_decode = msgspec.json.Decoder().decode


class UpstreamFailure(Exception):
    """The node failed before anything reached the client: retry elsewhere."""

    def __init__(self, reason: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


class ModelMissing(UpstreamFailure):
    """The node answered 404 for a model the registry said it had: a routing miss (the
    registry is stale), not the node failing, and not yet the client's 404."""


async def progress_lines(response: NodeResponse) -> AsyncIterator[bytes]:
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
        stale_timeout: float,
    ) -> NodeResponse:
        """POST an inference request; returns the response once its headers arrived.

        Raises UpstreamFailure on a refused connection, a timeout or a 5xx status, and
        ModelMissing on a 404 (Ollama's inference endpoints 404 only for the model).
        """
        try:
            response = await self.client.post(
                node.ollama_url, path, payload,
                connect_timeout=connect_timeout, read_timeout=stale_timeout,
            )
        except TimeoutError as exc:
            raise UpstreamFailure(f"timeout talking to {node.node_id}") from exc
        except NodeBroken as exc:
            raise UpstreamFailure(f"{node.node_id}: {exc}") from exc
        if response.status == 404:
            response.release()
            raise ModelMissing(f"{node.node_id} does not have the model", 404)
        if response.status >= 500:
            try:
                body = await response.read()
            except (NodeBroken, TimeoutError):
                body = b""
            finally:
                response.release()
            raise UpstreamFailure(
                f"{node.node_id} answered {response.status}", response.status, body)
        return response

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

    async def pull(self, node: NodeState, model: str, body: dict[str, Any]) -> NodeResponse:
        """Start a pull; the caller reads the progress and releases the response."""
        payload = msgspec.json.encode({**body, "model": model})
        try:
            return await self.client.request(
                b"POST", node.ollama_url, "/api/pull", payload,
                connect_timeout=PULL_CONNECT_TIMEOUT, read_timeout=PULL_SILENCE_TIMEOUT,
            )
        except (NodeBroken, TimeoutError) as exc:
            raise UpstreamError(f"cannot reach {node.node_id} to pull {model}: "
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
        except (NodeBroken, TimeoutError) as exc:
            raise UpstreamError(
                f"pull of {model} on {node.node_id} failed: {_describe(exc)}") from exc
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

    # ---------------------------------------------------------------------------------

    async def _whole(
        self, method: bytes, node: NodeState, path: str, payload: bytes, within: float,
    ) -> tuple[int, bytes]:
        try:
            response = await self.client.request(
                method, node.ollama_url, path, payload,
                connect_timeout=within, read_timeout=within,
            )
            try:
                return response.status, await response.read()
            finally:
                response.release()
        except (NodeBroken, TimeoutError) as exc:
            raise UpstreamError(
                f"{node.node_id} did not answer {path}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
