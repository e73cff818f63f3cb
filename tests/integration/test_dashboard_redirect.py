"""`GET /dashboard` on the router leads the browser to the dashboard, on the host it used."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from services.router.app import create_app
from shared.settings import Settings


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1:11435", "http://127.0.0.1:9123/"),
    ("gpu-router.lan:11435", "http://gpu-router.lan:9123/"),
    ("[::1]:11435", "http://[::1]:9123/"),
])
async def test_redirects_to_the_dashboard_port_on_the_same_host(
    settings: Settings, redis_url: str, host: str, expected: str,
) -> None:
    app = create_app(settings.replace(dashboard_enabled=True, dashboard_port=9123), redis_url)
    async with AsyncTestClient(app) as client:
        for path in ("/dashboard", "/dashboard/"):
            answer = await client.get(path, headers={"Host": host}, follow_redirects=False)
            assert answer.status_code == 302
            assert answer.headers["location"] == expected


async def test_without_a_dashboard_the_link_explains_in_ollama_shape(
    settings: Settings, redis_url: str,
) -> None:
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        answer = await client.get("/dashboard", follow_redirects=False)
    assert answer.status_code == 404
    assert "herd dashboard --router-url" in answer.json()["error"]
