"""``rc2udp poll`` and ``record`` against a real MediaWiki, as an operator runs them.

The wikis are real (`harness.mediawiki`); the changes are made through
their API (`tests.mediawiki.actions.WikiDriver`); rc2udp runs as the real
command in a child process and sends to plain UDP sockets here, whose
datagrams are decoded and compared with what the API reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness.mediawiki import MediaWikiServer
from rc2udp.api import ApiClient
from tests.mediawiki.actions import AGENT, WikiDriver
from xmlrc.wire import RecentChange, change_from_json, decode_datagram
from xmlrc.wire.model import iso_from_utc, utc_from_iso


class Inbox:
    """A UDP socket on loopback that collects and decodes datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.target = "{}:{}".format(*self.sock.getsockname())
        self.changes: list[RecentChange] = []

    def drain(self) -> list[RecentChange]:
        for _ in range(100_000):
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                break
            change = decode_datagram(data)
            assert isinstance(change, RecentChange), change
            self.changes.append(change)
        return self.changes

    def take(self) -> list[RecentChange]:
        got, self.changes = self.drain(), []
        return got

    def close(self) -> None:
        self.sock.close()


async def rc2udp(*args: str, password: str | None = None) -> tuple[int, str]:
    """Run ``python -m rc2udp ARGS`` to completion (at most 60 s): (status, stderr)."""
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


async def since_after_existing_changes(*wikis: MediaWikiServer) -> str:
    """A ``--since`` strictly after every change already in `wikis`, and not in their future.

    MediaWiki's timestamps have whole seconds: a ``--since`` taken in the same
    second as the wiki's own last change (install.php, the accounts) picks that
    change up.  So: one second after the newest change the API reports, and only
    once every wiki's clock (``curtimestamp``) has reached that second, so that
    whatever the test does next is at or after it.  No guessing with sleeps.
    """
    newest = {"action": "query", "list": "recentchanges", "rcdir": "older", "rclimit": "1"}
    newest |= {"rcprop": "timestamp"}
    clock = {"action": "query", "curtimestamp": "1"}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(ApiClient(w.api_url, user_agent=AGENT, maxlag=None))
            for w in wikis
        ]
        since = datetime.now(UTC).replace(microsecond=0)
        for client in clients:
            for row in (await client.get(newest))["query"]["recentchanges"]:
                since = max(since, utc_from_iso(row["timestamp"]) + timedelta(seconds=1))
        for client in clients:
            for _ in range(100):  # bounded: the wiki's clock is at most a second short
                if utc_from_iso((await client.get(clock))["curtimestamp"]) >= since:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{client.api_url}: its clock did not reach {since}")
    return iso_from_utc(since)


def anonymous(change: RecentChange) -> RecentChange:
    """What an anonymous reader gets: no patrol flags (rcprop=patrolled needs rights)."""
    return change.with_changes(patrolled=None, autopatrolled=False)


async def test_poll_once_with_a_state_file_sends_each_change_once_across_runs(
    mediawiki: MediaWikiServer, tmp_path: Path
) -> None:
    inbox = Inbox()
    state = tmp_path / "state.json"
    since = await since_after_existing_changes(mediawiki)
    poll: tuple[str, ...] = ("poll", "--once", "--api", mediawiki.api_url, "--target", inbox.target)
    poll += ("--state", str(state), "--since", since, "--lookback", "5")
    try:
        async with WikiDriver(mediawiki) as wiki:
            for n in range(3):
                await wiki.edit("first", f"Page {n}", f"Text {n}.", f"first {n}")
            status, log = await rc2udp(*poll)
            assert status == 0, log
            first = inbox.take()
            assert [c.rcid for c in first] == wiki.rcids("first")
            oracle = wiki.oracle()
            for change in first:
                assert change.rcid is not None
                assert change == anonymous(oracle[change.rcid])  # every other field, exactly
            assert all(c.patrolled is None for c in first)

            for n in range(2):
                await wiki.edit("second", f"Page {n}", f"Text {n}, again.", f"second {n}")
            status, log = await rc2udp(*poll)
            assert status == 0, log
            assert [c.rcid for c in inbox.take()] == wiki.rcids("second")

            status, log = await rc2udp(*poll)  # nothing new: nothing sent
            assert status == 0, log
            assert inbox.take() == []
            assert "sent 0 datagrams" in log
        saved = json.loads(state.read_text())["wikis"][mediawiki.api_url]
        assert saved["wiki"] == "testwiki"
        assert max(wiki.rcids("second")) in [rcid for rcid, _ in saved["seen"]]
    finally:
        inbox.close()


async def test_a_bot_password_login_adds_the_patrol_flags(
    mediawiki: MediaWikiServer, tmp_path: Path
) -> None:
    inbox = Inbox()
    user, password = mediawiki.admin_login
    since = await since_after_existing_changes(mediawiki)
    poll: tuple[str, ...] = ("poll", "--once", "--api", mediawiki.api_url, "--target", inbox.target)
    poll += ("--since", since, "--login", user)
    try:
        async with WikiDriver(mediawiki) as wiki:
            await wiki.edit("admin", "Patrolled page", "Text.", "by a sysop")
            await wiki.edit("anon", "Patrolled page", "Text by an IP.", "by an IP", as_="anon")
            status, log = await rc2udp(*poll, password=password)
            assert status == 0, log
            got = {c.rcid: c for c in inbox.take()}
            oracle = wiki.oracle()
            assert got == oracle  # exactly what the API says, patrol flags included
            (by_admin,) = wiki.rcids("admin")
            (by_anon,) = wiki.rcids("anon")
            assert got[by_admin].patrolled is True and got[by_admin].autopatrolled
            assert got[by_anon].patrolled is False and got[by_anon].anon

            status, log = await rc2udp(*poll, password="wrong-password")
            assert status == 1
            assert f"login as {user} failed" in log
            assert inbox.take() == []
    finally:
        inbox.close()


async def test_a_lost_session_is_logged_in_again(mediawiki: MediaWikiServer) -> None:
    async with ApiClient(mediawiki.api_url, user_agent=AGENT) as client:
        await client.login(*mediawiki.admin_login)
        assert client.logged_in_as == "Admin"
        client._http().cookie_jar.clear()  # the wiki forgot us (expired session)
        answer = await client.get({"action": "query", "meta": "userinfo", "uiprop": "rights"})
        assert "patrol" in answer["query"]["userinfo"]["rights"]  # logged in again
        assert client.logged_in_as == "Admin"


async def test_several_wikis_to_several_targets_from_a_config_file_or_repeated_api(
    mediawiki_factory: Callable[..., MediaWikiServer], tmp_path: Path
) -> None:
    wikis = [mediawiki_factory(wiki_id=name) for name in ("alphawiki", "betawiki")]
    inboxes = [Inbox(), Inbox()]
    since = await since_after_existing_changes(*wikis)
    config = tmp_path / "rc2udp.toml"
    config.write_text(
        f"""
targets = ["{inboxes[0].target}", "{inboxes[1].target}"]
format = "mw-json"
state_file = "state.json"
since = "{since}"
[[wiki]]
api = "{wikis[0].api_url}"
[[wiki]]
api = "{wikis[1].api_url}"
"""
    )
    try:
        expected: dict[str, set[int]] = {}
        for wiki in wikis:
            async with WikiDriver(wiki) as driver:
                for n in range(2):
                    await driver.edit("x", f"{wiki.wiki_id} page", f"Text {n}.", f"edit {n}")
                expected[wiki.wiki_id] = set(driver.rcids("x"))
        status, log = await rc2udp("poll", "--config", str(config), "--once")
        assert status == 0, log
        runs = [inboxes[0].take(), inboxes[1].take()]
        repeated: tuple[str, ...] = ("poll", "--once", "--api", wikis[0].api_url)
        repeated += ("--api", wikis[1].api_url)
        repeated += ("--since", since, "--target", inboxes[0].target)
        status, log = await rc2udp(*repeated)
        assert status == 0, log
        runs.append(inboxes[0].take())
        for got in runs:
            by_wiki: dict[str, list[int | None]] = {}
            for change in got:
                by_wiki.setdefault(change.wiki, []).append(change.rcid)
                wiki = next(w for w in wikis if w.wiki_id == change.wiki)
                assert change.server_url == wiki.server_url
            assert {
                w: sorted(r for r in rcids if r is not None) for w, rcids in by_wiki.items()
            } == {w: sorted(rcids) for w, rcids in expected.items()}
        assert json.loads((tmp_path / "state.json").read_text())["wikis"].keys() == {
            w.api_url for w in wikis
        }
    finally:
        for inbox in inboxes:
            inbox.close()


async def test_record_then_replay(mediawiki: MediaWikiServer, tmp_path: Path) -> None:
    recording = tmp_path / "changes.jsonl"
    inbox = Inbox()
    try:
        async with WikiDriver(mediawiki) as wiki:
            since = await since_after_existing_changes(mediawiki)
            await wiki.every_kind_of_change("rec")
            oracle = wiki.oracle()
        status, log = await rc2udp(
            "record", "--api", mediawiki.api_url, "--out", str(recording), "--since", since
        )
        assert status == 0, log
        recorded = [
            change_from_json(json.loads(line)) for line in recording.read_text().splitlines()
        ]
        # Everything the API still has (the deleted page's own rows are gone), each once, whole.
        assert [c.rcid for c in recorded] == sorted(
            rcid
            for rcid in oracle
            if not oracle[rcid].title.startswith("Xmlrc doomed") or oracle[rcid].is_log
        )
        for change in recorded:
            assert change.rcid is not None
            assert change == anonymous(oracle[change.rcid]).with_changes(
                redirect=change.redirect  # the page's state when read, not at the change
            )
        status, log = await rc2udp(
            "replay", str(recording), "--target", inbox.target, "--speed", "max"
        )
        assert status == 0, log
        for _ in range(200):
            if len(inbox.drain()) >= len(recorded):
                break
            await asyncio.sleep(0.05)
        assert inbox.take() == recorded  # xmlrc datagrams carry every field
    finally:
        inbox.close()
