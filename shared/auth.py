"""Bearer tokens: the one check behind client, node and admin tokens."""

from __future__ import annotations

import hmac

from shared.errors import Unauthorized

__all__ = ["require_bearer"]


def require_bearer(authorization: str, token: str, message: str) -> None:
    """Raise Unauthorized(message) unless `authorization` is `Bearer <token>`.

    An empty `token` means the check is switched off. The comparison takes the same time
    whatever the given value, so the token cannot be guessed byte by byte.
    """
    if not token:
        return
    scheme, _, value = authorization.partition(" ")
    # bytes: compare_digest refuses a str with non-ASCII characters (a header may hold any)
    given = value.strip().encode("utf-8", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, token.encode()):
        raise Unauthorized(message)
