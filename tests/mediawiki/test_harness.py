"""The throwaway MediaWiki itself: starts, restarts, feeds, stops every process, fails loudly."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from harness.mediawiki import MediaWikiError, MediaWikiServer, RCFeed
from tests.mediawiki.actions import WikiDriver
from xmlrc.wire import RecentChange, decode_datagram


def siteinfo(wiki: MediaWikiServer) -> dict[str, object]:
    url = f"{wiki.api_url}?action=query&meta=siteinfo&format=json&formatversion=2"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        general: dict[str, object] = json.load(response)["query"]["general"]
    return general


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_starts_restarts_on_the_same_port_with_its_data_and_stops_everything(
    tmp_path: Path,
) -> None:
    with MediaWikiServer(tmp_path / "wiki", wiki_id="harnesswiki") as wiki:
        general = siteinfo(wiki)
        assert general["wikiid"] == "harnesswiki"
        assert general["server"] == wiki.server_url
        assert str(general["generator"]).startswith("MediaWiki 1.")
        first_pid, port = wiki.pid, wiki.port
        assert first_pid is not None and wiki.running
        wiki.maintenance("edit.php", "--summary", "before the restart", "Kept page")
        wiki.restart()
        assert wiki.port == port and wiki.pid != first_pid
        url = f"{wiki.api_url}?action=query&list=recentchanges&format=json&formatversion=2"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            titles = [rc["title"] for rc in json.load(response)["query"]["recentchanges"]]
        assert "Kept page" in titles
        last_pid = wiki.pid
    assert last_pid is not None and not alive(last_pid) and not alive(first_pid)
    assert not listening(port)
    assert (tmp_path / "wiki").exists()  # a directory passed in is kept
    with MediaWikiServer(tmp_path / "wiki", wiki_id="harnesswiki") as again:
        assert again.port == port  # set up once: the same wiki, port and accounts
        assert siteinfo(again)["wikiid"] == "harnesswiki"


async def test_rc_feeds_change_while_the_wiki_runs(mediawiki: MediaWikiServer) -> None:
    plain, prefixed = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        for sock in (plain, prefixed):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(10)
        port_a, port_b = plain.getsockname()[1], prefixed.getsockname()[1]
        async with WikiDriver(mediawiki) as wiki:
            mediawiki.set_rc_feeds({"a": RCFeed(f"udp://127.0.0.1:{port_a}")})
            await wiki.edit("one", "Feed page", "One.", "first")
            mediawiki.set_rc_feeds(
                {"b": RCFeed(f"udp://127.0.0.1:{port_b}/wiki", "XMLRCFeedFormatter")}
            )
            await wiki.edit("two", "Feed page", "Two.", "second")
        first = plain.recv(65535)
        second = prefixed.recv(65535)
        assert first.startswith(b"{")
        assert second.startswith(b"wiki ") and b"<recentchange" in second
        one, two = decode_datagram(first), decode_datagram(second)
        assert isinstance(one, RecentChange) and isinstance(two, RecentChange)
        assert (one.comment, two.comment) == ("first", "second")
        assert (one.rcid, two.rcid) == (wiki.rcids("one")[0], wiki.rcids("two")[0])
        plain.settimeout(0.5)
        with pytest.raises(TimeoutError):
            plain.recv(65535)  # the first feed was replaced, not added to
    finally:
        plain.close()
        prefixed.close()


def test_a_port_taken_before_the_first_start_is_replaced(tmp_path: Path) -> None:
    wiki = MediaWikiServer(tmp_path / "wiki")
    try:
        wiki.setup()
        taken = wiki.port
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            wiki.start()
        assert wiki.port != taken
        assert siteinfo(wiki)["server"] == f"http://127.0.0.1:{wiki.port}"
    finally:
        wiki.cleanup()
    assert not wiki.running


def test_a_wiki_that_cannot_start_fails_loudly_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="wiki_id"):
        MediaWikiServer(tmp_path / "bad", wiki_id="no spaces")
    wiki = MediaWikiServer(tmp_path / "broken")
    try:
        wiki.setup()
        with wiki.local_settings.open("a") as settings:
            settings.write("\nthrow new Exception('broken on purpose');\n")
        with pytest.raises(MediaWikiError) as caught:
            wiki.start()
        assert "broken on purpose" in str(caught.value)  # the log's end comes with it
        assert not wiki.running and wiki.pid is None
    finally:
        wiki.cleanup()
