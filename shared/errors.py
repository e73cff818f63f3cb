"""One exception tree for Herd; each error knows its HTTP status and renders in the API's shape."""

from __future__ import annotations

from typing import Any

__all__ = [
    "STATE_HEADER",
    "BadRequest",
    "Conflict",
    "EndpointUnserved",
    "Forbidden",
    "HerdError",
    "ModelNotFound",
    "NoNodeAvailable",
    "NodeNotFound",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "RefusedByNode",
    "StateRebuilding",
    "StateUnavailable",
    "Unauthorized",
    "UpstreamError",
    "anthropic_type",
    "error_body",
    "is_anthropic_path",
    "is_openai_path",
]


class HerdError(Exception):
    """Base of every error Herd reports to a client."""

    status_code: int = 500
    openai_type: str = "server_error"
    openai_code: str | None = None

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(HerdError):
    status_code = 400
    openai_type = "invalid_request_error"


class Unauthorized(HerdError):
    status_code = 401
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"


class Forbidden(HerdError):
    status_code = 403
    openai_type = "invalid_request_error"
    openai_code = "forbidden"


class RateLimited(HerdError):
    """A client key is over its requests or tokens per minute; Retry-After says when the
    minute ends. OpenAI's own 429 has this type and code, so its client backs off."""

    status_code = 429
    openai_type = "requests"
    openai_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ModelNotFound(HerdError):
    # as Ollama's OpenAI endpoints word it: not OpenAI's own invalid_request_error /
    # model_not_found
    status_code = 404
    openai_type = "not_found_error"
    openai_code = None

    def __init__(self, model: str) -> None:
        super().__init__(f'model "{model}" not found, try pulling it first')
        self.model = model


class EndpointUnserved(HerdError):
    """No node that has the model runs an Ollama that serves the path (too old, or it
    answered 404 for the path): a 404, as from such an Ollama, that names the version
    needed. Not retryable: the SDKs do not retry a 404."""

    status_code = 404
    openai_type = "not_found_error"


class NotFound(HerdError):
    status_code = 404
    openai_type = "invalid_request_error"


class Conflict(HerdError):
    status_code = 409
    openai_type = "invalid_request_error"


class NodeNotFound(HerdError):
    status_code = 404
    openai_type = "invalid_request_error"


class PayloadTooLarge(HerdError):
    status_code = 413
    openai_type = "invalid_request_error"


class QueueFull(HerdError):
    status_code = 503
    openai_type = "server_error"
    openai_code = "queue_full"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class NoNodeAvailable(HerdError):
    status_code = 503
    openai_type = "server_error"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


# Sent with the two errors about the fleet state itself, whatever the API's body shape
# (Ollama's has no code): the dashboard says "fleet state unavailable" from it.
STATE_HEADER = "X-Herd-State"


class StateUnavailable(HerdError):
    """Redis (the fleet's shared state) cannot be reached or does not answer in time."""

    status_code = 503
    openai_type = "server_error"
    openai_code = "state_unavailable"

    def __init__(self, message: str = "fleet state (Redis) is unreachable, try again",
                 retry_after: int = 2) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after),
                                           STATE_HEADER: "unavailable"})


class StateRebuilding(HerdError):
    """Redis came back empty and the nodes have not all re-registered yet: not a 404."""

    status_code = 503
    openai_type = "server_error"
    openai_code = "state_rebuilding"

    def __init__(self, retry_after: int = 2) -> None:
        super().__init__("fleet state is being rebuilt, try again",
                         headers={"Retry-After": str(retry_after),
                                  STATE_HEADER: "rebuilding"})


class UpstreamError(HerdError):
    status_code = 502
    openai_type = "server_error"


class RefusedByNode(BadRequest):
    """A node refused the request itself (the model does not fit with its num_ctx, an
    option of the wrong type, a template that does not parse): the client's error, passed
    on with the node's own message.

    A 400 whatever the node's status (Ollama answers these with 500): the same request
    gets the same answer whether Herd already knew it could not fit (its own 400) or a node
    said so; bad input is never a 500 from Herd; and clients retry a 5xx (the OpenAI SDK
    twice by default) but not a 4xx, and a retry cannot succeed. The node's status is
    kept for the logs. Not an UpstreamError: the node did nothing wrong (the trace says
    `rejected`)."""

    def __init__(self, message: str, node_status: int) -> None:
        super().__init__(message)
        self.node_status = node_status


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def is_anthropic_path(path: str) -> bool:
    """Anthropic's Messages API: /v1/messages and /v1/messages/count_tokens."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


# Anthropic's error types by status; its SDKs pick the exception class from the status.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
    429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(
    path: str, status: int, message: str, error: HerdError | None = None
) -> dict[str, Any]:
    """Ollama's `{"error": "..."}` on /api/* and elsewhere, Anthropic's error object on
    /v1/messages, OpenAI's on the rest of /v1/*."""
    if is_anthropic_path(path):
        return {"type": "error", "error": {"type": anthropic_type(status), "message": message}}
    if is_openai_path(path):
        return {
            "error": {
                "message": message,
                "type": error.openai_type if error else _openai_type(status),
                "param": None,
                "code": error.openai_code if error else None,
            }
        }
    return {"error": message}


def _openai_type(status: int) -> str:
    return "invalid_request_error" if 400 <= status < 500 else "server_error"
