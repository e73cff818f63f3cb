"""`GET /dashboard`: send the browser to the Streamlit dashboard beside this router."""

from __future__ import annotations

from litestar import Request, get
from litestar.datastructures import State
from litestar.response import Redirect

from services.router.api.errors import error_responses
from services.router.context import RouterContext
from shared.errors import HerdError

__all__ = ["ROUTES", "dashboard_url"]


class DashboardOff(HerdError):
    """The router was started with --no-dashboard."""

    status_code = 404


def dashboard_url(scheme: str, host: str, port: int) -> str:
    """The dashboard on the host name the browser used for the router (IPv6 kept bracketed)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


@get(["/dashboard", "/dashboard/"], sync_to_thread=False, status_code=302, tags=["dashboard"],
     summary="A redirect to the Streamlit dashboard beside this router",
     responses=error_responses(404))
def dashboard(request: Request[object, object, State], state: State) -> Redirect:
    ctx: RouterContext = state.herd
    if not ctx.settings.dashboard_enabled:
        raise DashboardOff(
            "this router runs without its dashboard (--no-dashboard); start one with "
            f"`herd dashboard --router-url http://<this host>:{ctx.settings.port}`"
        )
    host = request.url.hostname or "localhost"
    return Redirect(dashboard_url(request.url.scheme or "http", host,
                                  ctx.settings.dashboard_port), status_code=302)


ROUTES = [dashboard]
