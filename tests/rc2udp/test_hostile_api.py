"""rc2udp against a hostile or broken API: local aiohttp servers on 127.0.0.1 that lie.

Each server is started and stopped by its test.  One redirects to another
origin (a second server that records whatever reaches it: it must get
nothing), one answers ``continue`` forever, one sends an endless body, one
repeats rcids, one sends absurd siteinfo strings.  Waits are injected and
recorded, never measured: the CLI runs only check that spacing is at least
the configured delay (a sleep is never shorter) and that the run ends.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rc2udp.api import ApiClient, ApiError, RetryPolicy, user_agent
from rc2udp.limits import Limits
from rc2udp.poll import WikiPoller
from rc2udp.state import StateFile
from tests.rc2udp.local_api import Recorder, Sleeps, serving
from xmlrc.wire import RecentChange
from xmlrc.wire.model import iso_from_utc

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GENERAL = {
    "wikiid": "hostilewiki",
    "server": "http://hostile.example",
    "servername": "hostile.example",
    "scriptpath": "/w",
}
PASSWORD = "hunter2-bot-password"
SESSION = "s3ssion-cookie-value"


def siteinfo(general: dict[str, Any] | None = None) -> web.Response:
    return web.json_response(
        {
            "batchcomplete": True,
            "query": {"general": general or GENERAL, "userinfo": {"id": 0, "rights": ["read"]}},
        }
    )


def row(rcid: int, seconds: int) -> dict[str, Any]:
    """One ``list=recentchanges`` item (formatversion 2), `seconds` after START."""
    return {
        "type": "edit",
        "ns": 0,
        "title": f"Page {rcid}",
        "rcid": rcid,
        "pageid": 1,
        "revid": rcid,
        "old_revid": 0,
        "timestamp": iso_from_utc(START + timedelta(seconds=seconds)),
        "user": "Mallory",
    }


def changes(rows: list[dict[str, Any]], rccontinue: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "curtimestamp": iso_from_utc(START + timedelta(days=1)),
        "query": {"recentchanges": rows},
    }
    if rccontinue is None:
        body["batchcomplete"] = True
    else:
        body["continue"] = {"rccontinue": rccontinue, "continue": "-||"}
    return web.json_response(body)


class ListSink:
    """Keeps every change it is given."""

    def __init__(self) -> None:
        self.changes: list[RecentChange] = []

    async def send(self, change: RecentChange) -> None:
        self.changes.append(change)


class Pauses(list[float]):
    """Stands in for the poller's wait between pages: records each delay."""

    async def __call__(self, seconds: float, stop: asyncio.Event) -> None:
        self.append(seconds)


def client(url: str, limits: Limits | None = None, attempts: int = 3) -> ApiClient:
    return ApiClient(
        url,
        user_agent=user_agent("ops@example.org"),
        maxlag=None,
        retry=RetryPolicy(attempts=attempts),
        limits=limits,
        sleep=Sleeps(),
        rng=random.Random(5),
    )


def poller(wiki: ApiClient, tmp_path: Path, limits: Limits, pauses: Pauses) -> WikiPoller:
    return WikiPoller(
        wiki,
        ListSink(),
        StateFile(tmp_path / "state.json"),
        since=START,
        lookback=timedelta(seconds=10),
        limits=limits,
        pause=pauses,
    )


def recentchanges(recorder: Recorder) -> list[dict[str, str]]:
    return [r.params for r in recorder.requests if r.params.get("list") == "recentchanges"]


async def rc2udp(*args: str, password: str | None = None, timeout: float = 30) -> tuple[int, str]:
    """``python -m rc2udp ARGS``, killed (and failed) after `timeout` s: (status, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "RC2UDP_PASSWORD"}
    if password is not None:
        env["RC2UDP_PASSWORD"] = password
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rc2udp",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"rc2udp {' '.join(args)} did not end within {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def target() -> str:
    return "127.0.0.1:9"  # discard; nothing needs to listen (UDP)


# -- redirects ---------------------------------------------------------------------------


class TwoOrigins:
    """A wiki whose login (and every request after the token) redirects to `elsewhere`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.wiki = Recorder()
        self.elsewhere = Recorder()
        self.elsewhere_origin = ""

    async def handle_wiki(self, request: web.Request) -> web.StreamResponse:
        seen = await self.wiki.note(request)
        if seen.params.get("meta") == "tokens":
            response = web.json_response({"query": {"tokens": {"logintoken": "abc+\\"}}})
            response.set_cookie("session", SESSION)  # what a stolen session would be
            return response
        location = f"{self.elsewhere_origin}/w/api.php"
        if request.method == "GET":
            location += "?" + request.query_string
        raise _redirect(self.status, location)

    async def handle_elsewhere(self, request: web.Request) -> web.StreamResponse:
        await self.elsewhere.note(request)
        return web.json_response({"login": {"result": "Success", "lgusername": "Bot"}})


def _redirect(status: int, location: str) -> web.HTTPException:
    kinds: dict[int, Callable[[str], web.HTTPException]] = {
        301: web.HTTPMovedPermanently,
        302: web.HTTPFound,
        303: web.HTTPSeeOther,
        307: web.HTTPTemporaryRedirect,
        308: web.HTTPPermanentRedirect,
    }
    return kinds[status](location)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_is_refused_and_the_other_origin_gets_nothing(
    status: int,
) -> None:
    origins = TwoOrigins(status)
    async with (
        serving(origins.handle_wiki) as wiki_origin,
        serving(origins.handle_elsewhere) as elsewhere_origin,
    ):
        origins.elsewhere_origin = elsewhere_origin  # same host, another port: another origin
        async with client(f"{wiki_origin}/w/api.php") as wiki:
            with pytest.raises(ApiError) as caught:
                await wiki.login("Bot@x", PASSWORD)
            assert caught.value.code == "crossorigin"
            assert wiki_origin in str(caught.value) and elsewhere_origin in str(caught.value)
            with pytest.raises(ApiError, match="crossorigin"):
                await wiki.get({"action": "query", "meta": "siteinfo"})
    assert origins.elsewhere.requests == []  # no password, no cookie, no request at all
    logins = [r for r in origins.wiki.requests if r.params.get("action") == "login"]
    assert len(logins) == 1  # refused, not retried
    assert logins[0].cookies == {"session": SESSION}  # its own cookie, to its own origin


async def test_the_command_refuses_a_cross_origin_redirect_and_names_both_origins() -> None:
    origins = TwoOrigins(307)
    async with (
        serving(origins.handle_wiki) as wiki_origin,
        serving(origins.handle_elsewhere) as elsewhere_origin,
    ):
        origins.elsewhere_origin = elsewhere_origin
        status, log = await rc2udp(
            *("poll", "--once", "--api", f"{wiki_origin}/w/api.php", "--target", target()),
            *("--login", "Bot@x", "--max-redirects", "2"),
            password=PASSWORD,
        )
    assert status == 1, log
    assert f"redirected from {wiki_origin} to {elsewhere_origin}" in log
    assert PASSWORD not in log and SESSION not in log
    assert origins.elsewhere.requests == []


async def test_a_same_origin_redirect_is_followed_a_bounded_number_of_times() -> None:
    recorder = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        await recorder.note(request)
        if request.path == "/old/api.php":  # moved, same origin: followed, method and body kept
            raise web.HTTPPermanentRedirect(f"/w/api.php?{request.query_string}")
        if request.path == "/loop/api.php":
            raise web.HTTPFound(f"/loop/api.php?{request.query_string}")
        return siteinfo()

    async with serving(handle) as origin:
        async with client(f"{origin}/old/api.php") as wiki:
            answer = await wiki.get({"action": "query", "meta": "siteinfo"})
            assert answer["query"]["general"]["wikiid"] == "hostilewiki"
            assert [r.path for r in recorder.requests] == ["/old/api.php", "/w/api.php"]
            assert recorder.requests[1].params["meta"] == "siteinfo"
        recorder.requests.clear()
        async with client(f"{origin}/loop/api.php", Limits(max_redirects=3)) as wiki:
            with pytest.raises(ApiError) as caught:
                await wiki.get({"action": "query"})
    assert caught.value.code == "redirects"
    assert "more than 3 redirects" in str(caught.value)
    assert len(recorder.requests) == 4  # the request and 3 redirects, not retried


async def test_a_same_origin_redirect_of_a_post_keeps_its_body_or_is_refused() -> None:
    recorder = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        await recorder.note(request)
        if request.path == "/temporary/api.php":
            raise web.HTTPTemporaryRedirect("/w/api.php")  # 307: method and body kept
        if request.path == "/found/api.php":
            raise web.HTTPFound("/w/api.php")  # 302: a client would drop the body
        return web.json_response({"edit": {"result": "Success"}})

    async with serving(handle) as origin:
        async with client(f"{origin}/temporary/api.php") as wiki:
            await wiki.post({"action": "edit", "title": "T"})
        assert [(r.method, r.path, r.params.get("title")) for r in recorder.requests] == [
            ("POST", "/temporary/api.php", "T"),
            ("POST", "/w/api.php", "T"),
        ]
        recorder.requests.clear()
        async with client(f"{origin}/found/api.php") as wiki:
            with pytest.raises(ApiError) as caught:
                await wiki.post({"action": "edit", "title": "T"})
    assert caught.value.code == "redirect" and "HTTP 302" in str(caught.value)
    assert [r.path for r in recorder.requests] == ["/found/api.php"]


# -- continuation ------------------------------------------------------------------------


async def test_once_ends_when_the_api_repeats_a_continuation_token_and_pages_are_spaced() -> None:
    recorder = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen = await recorder.note(request)
        if seen.params.get("meta"):
            return siteinfo()
        return changes([], rccontinue="20260102030405|7")  # the same token, forever

    async with serving(handle) as origin:
        status, log = await rc2udp(  # the default page delay
            "poll", "--once", "--api", f"{origin}/w/api.php", "--target", target()
        )
    assert status == 0, log
    assert "repeated its continuation" in log
    pages = [r for r in recorder.requests if r.params.get("list") == "recentchanges"]
    assert len(pages) == 2  # the token given, then given again: the round ends
    assert pages[1].params["rccontinue"] == "20260102030405|7"
    # Spaced by the delay: a lower bound only (a sleep is never shorter), with slack.
    assert pages[1].at - pages[0].at >= 0.8 * Limits().page_delay


async def test_endless_fresh_continuation_ends_at_max_pages_with_a_pause_between_pages(
    tmp_path: Path,
) -> None:
    recorder = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen = await recorder.note(request)
        if seen.params.get("meta"):
            return siteinfo()
        n = len(recentchanges(recorder))
        return changes([row(n, n)], rccontinue=f"20260102030405|{n}")  # a new token each time

    pauses = Pauses()
    async with serving(handle) as origin, client(f"{origin}/w/api.php") as wiki:
        polling = poller(wiki, tmp_path, Limits(page_delay=0.7, max_pages=25), pauses)
        await asyncio.wait_for(polling.run(asyncio.Event(), once=True), 30)
    assert len(recentchanges(recorder)) == 25
    assert pauses == [0.7] * 24  # between pages, not before the first
    assert polling.stats.cut_short == 1
    assert [c.rcid for c in polling.sink.changes] == list(range(1, 26))  # type: ignore[attr-defined]


async def test_the_default_pause_between_pages_is_polite(tmp_path: Path) -> None:
    recorder = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen = await recorder.note(request)
        if seen.params.get("meta"):
            return siteinfo()
        n = len(recentchanges(recorder))
        return changes([row(n, n)], rccontinue=f"20260102030405|{n}" if n < 3 else None)

    pauses = Pauses()
    async with serving(handle) as origin, client(f"{origin}/w/api.php") as wiki:
        polling = poller(wiki, tmp_path, Limits(), pauses)
        await asyncio.wait_for(polling.run(asyncio.Event(), once=True), 30)
    assert len(recentchanges(recorder)) == 3
    assert len(pauses) == 2 and all(0.5 <= p <= 1 for p in pauses)


async def test_a_continuation_may_not_change_the_query_or_the_client_s_parameters(
    tmp_path: Path,
) -> None:
    recorder = Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen = await recorder.note(request)
        if seen.params.get("meta"):
            return siteinfo()
        body = {"query": {"recentchanges": []}, "continue": {"rccontinue": "x|1", "maxlag": "999"}}
        return web.json_response(body)

    async with serving(handle) as origin, client(f"{origin}/w/api.php") as wiki:
        polling = poller(wiki, tmp_path, Limits(), Pauses())
        with pytest.raises(ApiError) as caught:
            await asyncio.wait_for(polling.run(asyncio.Event(), once=True), 30)
    assert caught.value.code == "badanswer" and "'maxlag'" in str(caught.value)
    assert len(recentchanges(recorder)) == 1  # never sent with maxlag=999


# -- size --------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_huge_answer_is_refused_while_streaming(declared: bool) -> None:
    cap = 1 << 20
    total = 64 << 20
    chunk = b" " * (64 << 10)  # JSON whitespace: a body that would parse, given the memory
    written = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal written
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = total + 2
        await response.prepare(request)
        try:
            await response.write(b"{")
            for _ in range(total // len(chunk)):
                await response.write(chunk)
                written += len(chunk)
            await response.write(b"}")
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what we want
        return response

    async with serving(handle) as origin, client(f"{origin}/w/api.php", Limits(cap), 1) as wiki:
        tracemalloc.start()
        try:
            with pytest.raises(ApiError) as caught:
                await wiki.get({"action": "query"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert caught.value.code == "toolarge"
    assert f"larger than {cap} bytes" in str(caught.value)
    assert written < total // 4  # it stopped reading: the rest was never sent
    assert peak < 8 * cap  # never held more than about the cap (64 times less than the body)


# -- repeated rcids ----------------------------------------------------------------------


async def test_an_rcid_repeated_in_a_page_or_a_later_page_of_the_round_is_sent_once(
    tmp_path: Path,
) -> None:
    pages = [
        [row(1, 0), row(2, 0), row(2, 0), row(1, 0), row(9, 100)],
        # rcid 2 again, at a later time: past the resume point's own memory (lookback 10 s)
        [row(2, 105), row(3, 105), row(3, 105)],
    ]

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("meta"):
            return siteinfo()
        page = int(request.query.get("rccontinue", "0|0").split("|")[1])
        return changes(pages[page], rccontinue="x|1" if page == 0 else None)

    async with serving(handle) as origin, client(f"{origin}/w/api.php") as wiki:
        polling = poller(wiki, tmp_path, Limits(page_delay=0), Pauses())
        await asyncio.wait_for(polling.run(asyncio.Event(), once=True), 30)
    sink = polling.sink
    assert isinstance(sink, ListSink)
    assert [c.rcid for c in sink.changes] == [1, 2, 9, 3]
    assert polling.stats.duplicates == 4


# -- siteinfo ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("server", "http://" + "a" * 5000 + ".example"),
        ("server", "javascript:alert(1)"),
        ("server", "http://evil.example/\n<script>"),
        ("servername", "b" * 1000),
        ("servername", "evil host"),
        ("scriptpath", "/" + "w" * 5000),
        ("scriptpath", "w/no-leading-slash"),
        ("scriptpath", "/w\x00"),
    ],
)
async def test_absurd_siteinfo_strings_are_refused_naming_the_field(
    tmp_path: Path, name: str, value: str
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return siteinfo({**GENERAL, name: value})

    async with serving(handle) as origin, client(f"{origin}/w/api.php") as wiki:
        with pytest.raises(ApiError) as caught:
            await poller(wiki, tmp_path, Limits(), Pauses()).prepare()
    assert caught.value.code == "badsiteinfo"
    assert f"siteinfo {name}:" in str(caught.value)
    assert len(str(caught.value)) < 200  # the value is at most quoted shortened


async def test_the_command_refuses_an_absurd_siteinfo_and_names_the_field() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return siteinfo({**GENERAL, "servername": "x" * 100_000})

    async with serving(handle) as origin:
        status, log = await rc2udp(
            "poll", "--once", "--api", f"{origin}/w/api.php", "--target", target()
        )
    assert status == 1, log
    assert "siteinfo servername:" in log
    assert len(log) < 2000  # the value is not echoed


def test_the_limits_are_configurable_and_checked() -> None:
    from rc2udp.config import ConfigError, build_config

    wiki = {"wiki": [{"api": "http://127.0.0.1/w/api.php"}]}
    assert build_config(wiki).limits == Limits()
    given = {"page_delay": 0, "max_pages": 3, "max_response_bytes": 4096, "max_redirects": 0}
    expected = Limits(max_response_bytes=4096, max_redirects=0, page_delay=0.0, max_pages=3)
    assert build_config({**wiki, **given}).limits == expected
    for key, bad in [
        ("page_delay", -1),
        ("max_pages", 0),
        ("max_pages", 1.5),
        ("max_response_bytes", 100),
        ("max_redirects", -1),
        ("max_redirects", "3"),
    ]:
        with pytest.raises(ConfigError, match=f"^{key}: "):
            build_config({**wiki, key: bad})
