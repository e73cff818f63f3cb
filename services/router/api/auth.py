"""Who may call what: the admin token for mutations, the node token for heartbeats.

With no admin token set, a mutation (settings, pull, delete, keys, benchmark start) is
accepted only from this machine: a fresh install on a LAN is then not open to anyone who
can reach its port, and the operator on the box can still use the dashboard and the CLI.
A browser's request from a page of another origin is not trusted for being on loopback.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from litestar import Request

from services.router.context import RouterContext
from shared.auth import require_bearer
from shared.errors import Forbidden

__all__ = ["LOOPBACK_ONLY", "is_loopback", "require_admin", "require_node"]

LOOPBACK_ONLY = ("no FLEET_ADMIN_TOKEN is set: settings, model changes (pull, delete, copy, "
                 "create, uploads, push), client keys and benchmark starts are accepted "
                 "only from this machine (loopback)")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_admin(ctx: RouterContext, request: Request[Any, Any, Any]) -> None:
    """401 unless the request carries `Authorization: Bearer <admin_token>`; with no admin
    token, 403 unless it comes from a loopback address."""
    token = ctx.settings.admin_token
    if token:
        require_bearer(request.headers.get("authorization", ""), token,
                       "this endpoint needs Authorization: Bearer <admin token>")
        return
    client = request.client
    if client is None or not is_loopback(client.host):
        raise Forbidden("changes are accepted only from the router's own machine until "
                        "FLEET_ADMIN_TOKEN is set; then send Authorization: Bearer <admin token>")
    if _foreign_origin(request):
        # A web page open in a browser on this machine is on loopback too: without this,
        # any site could delete models or change settings through it (CORS preflights
        # stop a DELETE, not a plain POST).
        raise Forbidden("changes from a web page of another origin need the admin token: "
                        "set FLEET_ADMIN_TOKEN and send Authorization: Bearer <admin token>")


def _foreign_origin(request: Request[Any, Any, Any]) -> bool:
    """A browser's request from a page that is not the router's own."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


def require_node(ctx: RouterContext, request: Request[Any, Any, Any]) -> None:
    """401 unless a heartbeat carries `Authorization: Bearer <node_token>` (when one is set)."""
    require_bearer(request.headers.get("authorization", ""), ctx.settings.node_token,
                   "heartbeat needs Authorization: Bearer <node token>")
