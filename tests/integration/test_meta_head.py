"""HEAD on the paths Ollama answers it on: 200 with no body, as health checks expect."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from services.router.app import create_app
from shared.settings import Settings


@pytest.mark.parametrize(("path", "media"), [
    ("/", "text/plain"), ("/api/version", "application/json"),
    ("/api/tags", "application/json"),
])
async def test_head_answers_200_without_a_body(
    settings: Settings, redis_url: str, path: str, media: str,
) -> None:
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        answer = await client.head(path)
        assert answer.status_code == 200, answer.text
        assert answer.content == b""
        assert answer.headers["content-type"].startswith(media)
        assert (await client.get(path)).status_code == 200  # GET is unchanged
        refused = await client.request("PATCH", path)
        assert refused.status_code == 405
