"""The live-feed page in a real headless Chromium, against a real Prosody and the bridge.

Prosody serves XMPP over WebSocket with an anonymous host; the bridge serves the
page on its HTTP listener; changes go in as UDP datagrams and are read back from
the page's DOM. Selenium blocks: only its calls run in a one-thread pool, the
event loop keeps running the bridge. With $XMLRC_PAGE_SCREENSHOT set, the first
test saves a screenshot of the page there (``make screenshot``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from harness.prosody import ProsodyServer
from tests.helpers import archived_stable_ids, bridge_config, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from udp2xmpp.httpd import WEB_DIR
from xmlrc.wire.model import RecentChange
from xmlrc_emitter import Emitter

WIKI = "testwiki"

#: Every row of the feed as the test reads it.
ROWS_JS = """
return Array.from(document.querySelectorAll('#feed .change'), (r) => {
  const title = r.querySelector('.title'), size = r.querySelector('.size');
  const comment = r.querySelector('.comment');
  return {id: r.dataset.id, hidden: r.hidden, title: title.textContent,
    href: title.getAttribute('href'), user: r.querySelector('.user').dataset.user,
    size: size.textContent, size_class: size.className, comment: comment.textContent,
    comment_children: comment.children.length, wiki: r.querySelector('.wiki').textContent,
    time: r.querySelector('time').dateTime,
    flags: Array.from(r.querySelectorAll('.flag'), (f) => f.dataset.flag)};
});
"""

#: Makes the page's next WebSocket connections fail (a closed loopback port) until
#: ``window.WebSocket = window.realWebSocket``.
HOLD_OFF = (
    "window.realWebSocket = window.realWebSocket || window.WebSocket;"
    "window.WebSocket = function () { return new window.realWebSocket('ws://127.0.0.1:1/'); };"
)


def change(rcid: int, **fields: Any) -> RecentChange:
    values: dict[str, Any] = {
        "wiki": WIKI,
        "type": "edit",
        "ns": 0,
        "title": f"Page {rcid}",
        "user": "Alice",
        "timestamp": datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60 - rcid),
        "rcid": rcid,
        "revid": 1000 + rcid,
        "old_revid": 900 + rcid,
        "oldlen": 100,
        "newlen": 100 + rcid,
        "comment": f"comment {rcid}",
        "server_url": "https://test.example.org",
        "server_script_path": "/w",
        "server_name": "Test Wiki",
        "patrolled": True,
    }
    values.update(fields)
    return RecentChange(**values)


def send(bridge: Bridge, *changes: RecentChange) -> None:
    host, port = bridge.addresses[0]
    with Emitter(host, port) as emitter:
        for item in changes:
            emitter.send(item)


@dataclass
class Page:
    """The browser, driven from the event loop through a one-thread pool."""

    driver: webdriver.Chrome
    pool: ThreadPoolExecutor
    url: str
    prosody: ProsodyServer

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.js(ROWS_JS)
        return rows

    async def wait_rows(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            rows = await self.rows()
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {count} rows, have {len(rows)}: {rows}")

    async def wait_state(self, state: str, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = ""
        while loop.time() < deadline:
            seen = await self.js("return document.getElementById('status').dataset.state")
            if seen == state:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"page status never became {state!r} (last {seen!r})")

    async def joined(self) -> bool:
        rooms = await self.js("return window.xmlrcPage ? window.xmlrcPage.rooms : []")
        return any(r["joined"] for r in rooms)


def _driver() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,900",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


@asynccontextmanager
async def static_files() -> AsyncIterator[str]:
    """The page's directory on a plain static web server (loopback): its base URL."""
    app = web.Application()
    app.router.add_static("/rc/", WEB_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/rc/"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def page_setup(
    prosody_factory: Callable[..., ProsodyServer], query: str = "", *, static: bool = False
) -> AsyncIterator[tuple[Bridge, Page]]:
    prosody = prosody_factory(web=True)
    config = bridge_config(
        prosody,
        rooms={"wikis": [WIKI]},
        http={
            "listen": "127.0.0.1:0",
            "page_websocket": prosody.websocket_url,
            "page_domain": prosody.anonymous_domain,
        },
    )
    bridge = await running_bridge(config)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selenium")
    driver: webdriver.Chrome | None = None
    stack = AsyncExitStack()
    try:
        room = f"{WIKI}@{prosody.muc_domain}"
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the bridge's room")
        assert bridge.http_address is not None
        host, port = bridge.http_address
        driver = await asyncio.get_running_loop().run_in_executor(pool, _driver)
        page = Page(driver, pool, f"http://{host}:{port}/{query}", prosody)
        if static:
            settings = urlencode(
                {
                    "ws": prosody.websocket_url,
                    "domain": prosody.anonymous_domain,
                    "muc": prosody.muc_domain,
                    "rooms": WIKI,
                }
            )
            page.url = f"{await stack.enter_async_context(static_files())}index.html?{settings}"
        await page.call(driver.get, page.url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await page.joined():
            if loop.time() > deadline:
                status = await page.js("return document.body.innerText")
                console = await page.call(driver.get_log, "browser")
                raise AssertionError(f"the page never joined the room: {status!r} {console}")
            await asyncio.sleep(0.1)
        yield bridge, page
    finally:
        if driver is not None:
            await asyncio.get_running_loop().run_in_executor(pool, driver.quit)
        pool.shutdown(wait=True)
        await stack.aclose()
        await bridge.stop()


async def test_changes_appear_with_their_fields_filters_hide_and_html_stays_text(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    async with page_setup(prosody_factory) as (bridge, page):
        listed = await page.js(
            "return Array.from(document.querySelectorAll('#rooms input'), (b) => b.dataset.room)"
        )
        assert f"{WIKI}@conference.localhost" in listed  # from disco#items
        hostile = "<b>x</b><script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"
        sent = [
            change(1),
            change(2, user="RoboBot", bot=True, minor=True, oldlen=5000, newlen=1200),
            change(3, type="new", title="Brand new", old_revid=None, oldlen=0, newlen=2500),
            change(4, comment=hostile, user="Mallory", patrolled=False, ns=4, title="Project:X"),
            change(
                5,
                type="log",
                title="User:Spammer",
                ns=2,
                user="Admin",
                revid=None,
                old_revid=None,
                oldlen=None,
                newlen=None,
                logtype="block",
                logaction="block",
                log_action_comment="Admin blocked User:Spammer (spam)",
                comment="spam",
            ),
            change(6, title="Javascript link", server_url="javascript:alert(1)//"),
        ]
        send(bridge, *sent)
        rows = {row["id"]: row for row in await page.wait_rows(6)}
        assert sorted(rows) == [f"{WIKI}/{n}" for n in range(1, 7)]

        first = rows[f"{WIKI}/1"]
        assert first["title"] == "Page 1" and first["user"] == "Alice"
        assert first["href"] == "https://test.example.org/w/index.php?diff=1001&oldid=901"
        assert first["size"] == "+1" and "plus" in first["size_class"]
        assert first["comment"] == "comment 1" and first["flags"] == ["patrolled"]
        assert "Test Wiki" in first["wiki"]
        assert first["time"] == sent[0].timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        bot = rows[f"{WIKI}/2"]
        assert bot["size"] == "-3800" and "minus" in bot["size_class"] and "s3" in bot["size_class"]
        assert bot["flags"] == ["minor", "bot", "patrolled"]
        assert rows[f"{WIKI}/3"]["flags"][0] == "new"
        assert rows[f"{WIKI}/3"]["href"] == "https://test.example.org/w/index.php?oldid=1003"
        log_row = rows[f"{WIKI}/5"]
        assert log_row["comment"] == "Admin blocked User:Spammer (spam)"
        assert log_row["href"] == "https://test.example.org/w/index.php?title=User%3ASpammer"
        assert rows[f"{WIKI}/6"]["href"] is None  # not http(s): no link

        unsafe = rows[f"{WIKI}/4"]
        assert unsafe["comment"] == hostile and unsafe["comment_children"] == 0
        assert await page.js("return window.pwned === undefined")
        assert (
            await page.js("return document.querySelectorAll('#feed b, #feed script').length") == 0
        )

        screenshot = os.environ.get("XMLRC_PAGE_SCREENSHOT")
        if screenshot:
            await page.call(page.driver.save_screenshot, screenshot)

        # Filters: bots off hides exactly the bot's change; a user filter keeps only hers.
        await page.call(lambda: page.driver.find_element(By.ID, "f-bots").click())
        shown = {row["id"] for row in await page.rows() if not row["hidden"]}
        assert shown == set(rows) - {f"{WIKI}/2"}
        await page.call(lambda: page.driver.find_element(By.ID, "f-user").send_keys("mallory"))
        shown = {row["id"] for row in await page.rows() if not row["hidden"]}
        assert shown == {f"{WIKI}/4"}
        await page.call(lambda: page.driver.find_element(By.ID, "f-user").clear())
        await page.js("document.getElementById('f-user').dispatchEvent(new Event('input'))")
        await page.call(lambda: page.driver.find_element(By.ID, "f-size").send_keys("2000"))
        shown = {row["id"] for row in await page.rows() if not row["hidden"]}
        assert shown == {f"{WIKI}/3"}  # |+2500|; the bot's -3800 stays hidden (bots off)

        # Pause keeps what arrives, resume shows it.
        await page.call(lambda: page.driver.find_element(By.ID, "pause").click())
        send(bridge, change(7), change(8))
        button = ""
        for _attempt in range(150):
            button = await page.js("return document.getElementById('pause').textContent")
            if button == "Resume (2 waiting)":
                break
            await asyncio.sleep(0.2)
        assert button == "Resume (2 waiting)"
        assert len(await page.rows()) == 6
        await page.call(lambda: page.driver.find_element(By.ID, "pause").click())
        assert [row["id"] for row in await page.rows()][:2] == [f"{WIKI}/8", f"{WIKI}/7"]

        # Phone width: nothing wider than the screen.
        await page.call(page.driver.set_window_size, 390, 844)
        overflow = "return document.documentElement.scrollWidth - window.innerWidth"
        assert await page.js(overflow) <= 0
        # No request refused by the policy, no script error, nothing else logged as severe.
        console = await page.call(page.driver.get_log, "browser")
        assert [entry for entry in console if entry["level"] == "SEVERE"] == []


async def test_after_the_socket_is_cut_it_reconnects_and_shows_every_change_once(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    async with page_setup(prosody_factory, f"web/?rooms={WIKI}") as (bridge, page):
        send(bridge, *(change(n) for n in range(1, 4)))
        await page.wait_rows(3)
        # Cut the socket, and keep the page out (its reconnects reach a closed port)
        # until the changes sent meanwhile are in the room's archive.
        await page.js(HOLD_OFF + "window.xmlrcPage.connection._proto.socket.close();")
        await page.wait_state("offline")
        send(bridge, *(change(n) for n in range(4, 9)))
        room = f"{WIKI}@{bridge.config.rooms.service}"
        prosody = page.prosody
        expected = [f"{WIKI}/{n}" for n in range(1, 9)]
        for _attempt in range(100):
            if await archived_stable_ids(prosody, room) == expected:
                break
            await asyncio.sleep(0.2)
        assert await archived_stable_ids(prosody, room) == expected
        assert len(await page.rows()) == 3  # still away
        await page.js("window.WebSocket = window.realWebSocket;")
        await page.wait_state("online", timeout=60)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await page.joined():
            assert loop.time() < deadline, "the page never joined the room again"
            await asyncio.sleep(0.1)
        send(bridge, *(change(n) for n in range(9, 11)))
        await page.wait_rows(10)
        await asyncio.sleep(1.0)  # room for a duplicate to show up, if there were one
        ids = [row["id"] for row in await page.rows()]
        assert ids == [f"{WIKI}/{n}" for n in range(10, 0, -1)]  # newest first, no gap
        # The five sent while away came from the archive, the others live.
        assert await page.js("return window.xmlrcPage.shown") == {"live": 5, "archive": 5}


async def test_as_plain_static_files_it_takes_its_settings_from_the_query_string(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    async with page_setup(prosody_factory, static=True) as (bridge, page):
        assert "/rc/index.html?" in await page.js("return window.location.href")
        send(bridge, change(1, comment="from a static page"))
        (row,) = await page.wait_rows(1)
        assert row["id"] == f"{WIKI}/1" and row["comment"] == "from a static page"


async def test_page_files_have_types_and_a_strict_policy_and_no_traversal(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    prosody = prosody_factory()
    config = bridge_config(prosody, http={"listen": "127.0.0.1:0", "page_domain": "anon.example"})
    bridge = await running_bridge(config)
    try:
        assert bridge.http_address is not None
        base = "http://{}:{}".format(*bridge.http_address)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{base}/", allow_redirects=False) as response:
                assert response.status == 302 and response.headers["Location"] == "/web/"
            expected = {
                "/web/": "text/html",
                "/web/app.js": "text/javascript",
                "/web/style.css": "text/css",
                "/web/vendor/strophe.umd.min.js": "text/javascript",
                "/web/config.json": "application/json",
            }
            for path, content_type in expected.items():
                async with session.get(base + path) as response:
                    assert response.status == 200, path
                    assert response.content_type == content_type, path
                    policy = response.headers["Content-Security-Policy"]
                    assert "default-src 'none'" in policy and "script-src 'self'" in policy
                    assert "unsafe-inline" not in policy
                    assert response.headers["X-Content-Type-Options"] == "nosniff"
            async with session.get(f"{base}/web/config.json") as response:
                body = await response.json()
            assert body == {"websocket": None, "domain": "anon.example", "muc": prosody.muc_domain}
            for path in (
                "/web/../httpd.py",
                "/web/%2e%2e/httpd.py",
                "/web/..%2fhttpd.py",
                "/web/vendor/../../config.py",
                "/web/nothing.js",
            ):
                async with session.get(base + path) as response:
                    assert response.status == 404, path
                    assert "import" not in await response.text()
            async with session.get(f"{base}/healthz") as response:
                assert response.status in (200, 503)  # the ops routes are still there
    finally:
        await bridge.stop()


async def test_when_the_archive_no_longer_covers_the_gap_the_page_says_so(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    async with page_setup(prosody_factory, f"web/?rooms={WIKI}") as (bridge, page):
        send(bridge, *(change(n) for n in range(1, 3)))
        await page.wait_rows(2)
        # The archive is in memory: a restart loses it, and the last id the page showed.
        # The page is held off until the bridge has its room back (else it would create it).
        await page.js(HOLD_OFF)
        page.prosody.restart()
        room = f"{WIKI}@{bridge.config.rooms.service}"
        await wait_for(lambda: room in bridge.sink.joined_rooms(), 60, "the bridge back")
        await page.js("window.WebSocket = window.realWebSocket;")
        await page.wait_state("online", timeout=60)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await page.joined():
            assert loop.time() < deadline, "the page never joined the room again"
            await asyncio.sleep(0.1)
        send(bridge, change(3))
        rows = await page.wait_rows(3)
        assert [row["id"] for row in rows] == [f"{WIKI}/{n}" for n in range(3, 0, -1)]
        text = await page.js("return document.getElementById('notice').textContent")
        assert "no longer reaches back" in text
