"""The polite HTTP client against a scripted aiohttp server on 127.0.0.1.

These test our client's behaviour (Retry-After on 429 and 503, maxlag,
backoff with jitter, bounded attempts, the User-Agent), so the server only
plays back answers. Waits are recorded instead of slept: the tests assert
the delays the client chose, never elapsed time.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from rc2udp.api import ApiClient, ApiError, RetryPolicy, parse_retry_after, user_agent
from tests.rc2udp.local_api import Sleeps, serving

OK = json.dumps({"batchcomplete": True, "query": {"general": {"wikiid": "fakewiki"}}})
MAXLAG = json.dumps(
    {"error": {"code": "maxlag", "info": "Waiting for db1: 6 seconds lagged", "lag": 6}}
)


@dataclass
class ScriptedApi:
    """Answers from a script (status, headers, body), then 200 OK; records requests."""

    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        params = dict(await request.post()) if request.method == "POST" else dict(request.query)
        self.requests.append(
            (request.method, {k: str(v) for k, v in params.items()}, dict(request.headers))
        )
        status, headers, body = self.script.pop(0) if self.script else (200, {}, OK)
        content_type = "text/html" if body.startswith("<") else "application/json"
        return web.Response(status=status, headers=headers, text=body, content_type=content_type)


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ScriptedApi]:
    scripted = ScriptedApi()
    async with serving(scripted.handle) as origin:
        scripted.url = f"{origin}/w/api.php"
        yield scripted


def client(url: str, sleeps: Sleeps, **policy: Any) -> ApiClient:
    return ApiClient(
        url,
        user_agent=user_agent("ops@example.org"),
        retry=RetryPolicy(**policy),
        sleep=sleeps,
        rng=random.Random(7),
    )


async def test_429_and_503_are_retried_after_the_time_retry_after_asks(api: ScriptedApi) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    api.script = [(429, {"Retry-After": "7"}, "slow down"), (503, {"Retry-After": when}, "busy")]
    sleeps = Sleeps()
    async with client(api.url, sleeps) as wiki:
        answer = await wiki.get({"action": "query", "meta": "siteinfo"})
    assert answer["query"]["general"]["wikiid"] == "fakewiki"
    assert len(api.requests) == 3
    assert 7 <= sleeps[0] <= 8  # Retry-After, plus at most 1 s of jitter
    assert 28 <= sleeps[1] <= 32  # an HTTP date about 30 s ahead
    assert wiki.retries == {"HTTP 429": 1, "HTTP 503": 1}


async def test_maxlag_is_sent_and_a_lagged_wiki_is_waited_for(api: ScriptedApi) -> None:
    api.script = [(200, {"Retry-After": "5", "X-Database-Lag": "6"}, MAXLAG)]
    sleeps = Sleeps()
    async with client(api.url, sleeps) as wiki:
        await wiki.get({"action": "query", "meta": "siteinfo"})
    assert len(api.requests) == 2
    for method, params, headers in api.requests:
        assert method == "GET"
        assert params["maxlag"] == "5"
        assert (params["format"], params["formatversion"]) == ("json", "2")
        assert headers["User-Agent"].startswith("rc2udp/")
        assert "(xmlrc; ops@example.org)" in headers["User-Agent"]
    assert 5 <= sleeps[0] <= 6


async def test_a_huge_retry_after_is_capped(api: ScriptedApi) -> None:
    api.script = [(503, {"Retry-After": "86400"}, "maintenance")]
    sleeps = Sleeps()
    async with client(api.url, sleeps, max_retry_after=600) as wiki:
        await wiki.get({"action": "query"})
    assert 600 <= sleeps[0] <= 601


async def test_server_errors_back_off_exponentially_with_jitter_then_give_up(
    api: ScriptedApi,
) -> None:
    api.script = [(500, {}, "oops")] * 5
    sleeps = Sleeps()
    async with client(api.url, sleeps, attempts=5, backoff_base=1, backoff_cap=6) as wiki:
        with pytest.raises(ApiError) as caught:
            await wiki.get({"action": "query"})
    assert caught.value.code == "unavailable"
    assert "gave up after 5 attempts" in str(caught.value)
    assert len(api.requests) == 5
    assert len(sleeps) == 4
    for delay, ceiling in zip(sleeps, (1, 2, 4, 6), strict=True):  # capped at 6
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(sleeps)) == 4  # jittered, not a fixed schedule


async def test_an_html_page_instead_of_json_is_retried(api: ScriptedApi) -> None:
    api.script = [(200, {}, "<html><body>Wikimedia Error</body></html>")]
    sleeps = Sleeps()
    async with client(api.url, sleeps) as wiki:
        await wiki.get({"action": "query"})
    assert len(api.requests) == 2 and len(sleeps) == 1


async def test_a_refused_request_fails_at_once(api: ScriptedApi) -> None:
    api.script = [(200, {}, json.dumps({"error": {"code": "badvalue", "info": "no such rcprop"}}))]
    sleeps = Sleeps()
    async with client(api.url, sleeps) as wiki:
        with pytest.raises(ApiError) as caught:
            await wiki.get({"action": "query"})
    assert (caught.value.code, caught.value.info) == ("badvalue", "no such rcprop")
    assert len(api.requests) == 1 and sleeps == []


async def test_an_unreachable_wiki_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    sleeps = Sleeps()
    async with client(f"http://127.0.0.1:{port}/api.php", sleeps, attempts=3) as wiki:
        with pytest.raises(ApiError, match="network"):
            await wiki.get({"action": "query"})
    assert len(sleeps) == 2


def test_retry_after_values() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Fri, 02 Jan 2026 03:05:05 GMT", now) == 60
    assert parse_retry_after("Fri, 02 Jan 2026 03:00:00 GMT", now) == 0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_and_honour_bounds() -> None:
    policy = RetryPolicy(backoff_base=2, backoff_cap=100, max_retry_after=60)
    rng = random.Random(3)
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8), (7, 100), (30, 100)):
        for _ in range(50):
            assert ceiling / 2 <= policy.backoff(attempt, rng) <= ceiling
    assert all(5 <= policy.honour(5, rng) <= 6 for _ in range(50))
    assert all(60 <= policy.honour(3600, rng) <= 61 for _ in range(50))


def test_user_agent_names_the_tool_and_the_contact() -> None:
    agent = user_agent("https://example.org/ops")
    assert agent.startswith("rc2udp/")
    assert "(xmlrc; https://example.org/ops)" in agent
    assert " aiohttp/" in agent and " python/3." in agent
