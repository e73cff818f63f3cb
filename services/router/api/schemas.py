"""Response shapes of the router's fleet and dashboard endpoints, as msgspec structs.

The dashboard's data layer decodes these same structs, so a field renamed here is renamed
for both sides at once.
"""

from __future__ import annotations

import msgspec

__all__ = ["KeyCreated", "KeyInfo", "KeyList", "KeyRevoked"]


class KeyInfo(msgspec.Struct, kw_only=True):
    """A client key as listed: never its secret."""

    app: str
    requests_per_minute: int  # 0: no limit
    tokens_per_minute: int  # 0: no limit
    created: float  # epoch seconds
    last_used: float | None = None  # epoch seconds; None: never used


class KeyCreated(KeyInfo, kw_only=True):
    """A new key: the only answer that carries the secret."""

    key: str


class KeyList(msgspec.Struct, kw_only=True):
    keys: list[KeyInfo]


class KeyRevoked(msgspec.Struct, kw_only=True):
    app: str
    revoked: bool = True
