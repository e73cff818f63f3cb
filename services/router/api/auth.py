"""Who may call what: the admin token for mutations, the node token for heartbeats."""

from __future__ import annotations

from typing import Any

from litestar import Request

from services.router.context import RouterContext
from shared.auth import require_bearer

__all__ = ["require_admin", "require_node"]


def require_admin(ctx: RouterContext, request: Request[Any, Any, Any]) -> None:
    """401 unless the request carries `Authorization: Bearer <admin_token>` (when one is set)."""
    require_bearer(request.headers.get("authorization", ""), ctx.settings.admin_token,
                   "this endpoint needs Authorization: Bearer <admin token>")


def require_node(ctx: RouterContext, request: Request[Any, Any, Any]) -> None:
    """401 unless a heartbeat carries `Authorization: Bearer <node_token>` (when one is set)."""
    require_bearer(request.headers.get("authorization", ""), ctx.settings.node_token,
                   "heartbeat needs Authorization: Bearer <node token>")
