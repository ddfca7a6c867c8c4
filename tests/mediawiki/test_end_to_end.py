"""A real MediaWiki, end to end: its changes through every path to a client, each once, whole.

One wiki (Debian's MediaWiki 1.39, SQLite, ``php -S``), one set of changes
(an edit, a page creation, a bot edit, a minor edit, an anonymous edit, a
unicode title, a 500-character unicode comment, a move, a protect, a delete,
a block, an account creation, then a burst of edits), five paths at once,
each into its own room of one Prosody through its own bridge:

- ``json``, ``xml``: stock ``$wgRCFeeds`` with ``JSONRCFeedFormatter`` /
  ``XMLRCFeedFormatter`` over UDP;
- ``json+prefix``, ``xml+prefix``: the same behind ``udp://host:port/PREFIX``;
- ``rc2udp``: ``rc2udp poll`` reading ``api.php`` instead, stopped (SIGTERM)
  in the middle of the burst and started again on its state file.

Every delivered change is compared field by field with what the API's
``list=recentchanges`` reported for it (`tests.mediawiki.fidelity`); the
table is printed (``pytest -s``) and written to ``fidelity.txt`` in the
test's temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio

from harness.mediawiki import MediaWikiServer, RCFeed
from harness.prosody import ProsodyServer
from rcclient import Delivery, RCClient
from tests.helpers import bridge_config, reader, running_bridge, wait_for
from tests.mediawiki.actions import LONG_COMMENT, UNICODE_TITLE, WikiDriver
from tests.mediawiki.fidelity import DIFFERS, MATCH, NOT_CARRIED, FidelityReport
from udp2xmpp.bridge import Bridge
from xmlrc.wire import RecentChange
from xmlrc.wire.apijson import ResumePoint
from xmlrc.wire.model import FIELD_NAMES, iso_from_utc

PREFIX = "rcfeed"
#: path -> (MediaWiki formatter, line prefix) for the paths fed by $wgRCFeeds.
FEEDS: dict[str, tuple[str, str | None]] = {
    "json": ("JSONRCFeedFormatter", None),
    "xml": ("XMLRCFeedFormatter", None),
    "json+prefix": ("JSONRCFeedFormatter", PREFIX),
    "xml+prefix": ("XMLRCFeedFormatter", PREFIX),
}
PATHS = (*FEEDS, "rc2udp")
BURST = 30

#: label -> what the API must say about that change (so the oracle is the right row).
LABELS: dict[str, Callable[[RecentChange], bool]] = {
    "page creation": lambda c: c.type == "new",
    "edit": lambda c: c.type == "edit" and not c.minor and not c.bot,
    "minor edit": lambda c: c.type == "edit" and c.minor,
    "bot edit": lambda c: c.type == "edit" and c.bot and c.user == "BridgeBot",
    "anonymous edit": lambda c: c.type == "edit" and c.anon and c.user == "127.0.0.1",
    "unicode title": lambda c: c.type == "new" and c.title.startswith(UNICODE_TITLE),
    "500-character comment": lambda c: c.comment == LONG_COMMENT and len(c.comment) == 500,
    "page to delete": lambda c: c.type == "new",
    "move": lambda c: (c.logtype, c.logaction) == ("move", "move"),
    "protect": lambda c: (c.logtype, c.logaction) == ("protect", "protect"),
    "delete": lambda c: (c.logtype, c.logaction) == ("delete", "delete"),
    "block": lambda c: (c.logtype, c.logaction) == ("block", "block"),
    "account creation": lambda c: (c.logtype, c.logaction) == ("newusers", "create"),
}


@dataclass
class Run:
    """What happened: the oracle, what each path delivered, what each bridge counted."""

    #: rcid -> the change as the API reported it right after its action.
    oracle: dict[int, RecentChange]
    #: rcid -> the change as the API reports it at the end (rows since the start).
    final: dict[int, RecentChange]
    labels: dict[str, list[int]]
    delivered: dict[str, list[Delivery]] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    #: rc2udp's resume point when it was stopped; its exit statuses.
    stopped_at: ResumePoint | None = None
    rc2udp_exits: list[int | None] = field(default_factory=list)
    rc2udp_log: str = ""
    directory: Path = Path()


class _Rc2udp:
    """``rc2udp poll`` as a child process (the real command), stopped with SIGTERM."""

    def __init__(self, wiki: MediaWikiServer, target: tuple[str, int], directory: Path) -> None:
        self.args = [
            *(sys.executable, "-m", "rc2udp", "-v", "poll", "--api", wiki.api_url),
            *("--target", f"{target[0]}:{target[1]}", "--interval", "0.2"),
            *("--state", str(directory / "rc2udp-state.json")),
            *("--login", wiki.admin_login[0]),
        ]
        self.env = {**os.environ, "RC2UDP_PASSWORD": wiki.admin_login[1]}
        self.log = directory / "rc2udp.log"
        self.state_file = directory / "rc2udp-state.json"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, since: datetime) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.args,
                "--since",
                iso_from_utc(since),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    async def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
                return None
        return process.returncode


def _has_joined(bridge: Bridge) -> bool:
    return len(bridge.sink.joined_rooms()) == 1


async def _read(client: RCClient, into: list[Delivery]) -> None:
    async for delivery in client.deliveries():
        into.append(delivery)


async def _scenario(prosody: ProsodyServer, wiki: MediaWikiServer, directory: Path) -> Run:
    bridges: dict[str, Bridge] = {}
    readers: dict[str, RCClient] = {}
    got: dict[str, list[Delivery]] = {path: [] for path in PATHS}
    tasks: list[asyncio.Task[None]] = []
    rc2udp: _Rc2udp | None = None
    try:
        for path in PATHS:
            room = "{wiki}-" + path.replace("+", "-")
            config = bridge_config(prosody, rooms={"room": room, "wikis": [wiki.wiki_id]})
            bridges[path] = await running_bridge(config)
        for path, bridge in bridges.items():
            await wait_for(partial(_has_joined, bridge), what=f"the {path} bridge's room")
            client = reader(prosody, bridge.sink.joined_rooms())
            await client.connect()
            readers[path] = client
            tasks.append(asyncio.create_task(_read(client, got[path])))
        feeds = {}
        for path, (formatter, prefix) in FEEDS.items():
            host, port = bridges[path].addresses[0]
            uri = f"udp://{host}:{port}" + (f"/{prefix}" if prefix else "")
            feeds[path] = RCFeed(uri, formatter)
        wiki.set_rc_feeds(feeds)

        start = datetime.now(UTC).replace(microsecond=0)
        rc2udp = _Rc2udp(wiki, bridges["rc2udp"].addresses[0], directory)
        await rc2udp.start(since=start)
        async with WikiDriver(wiki) as driver:
            await driver.every_kind_of_change("e2e")
            burst: list[int] = []

            async def edits(count: int) -> None:
                for _ in range(count):
                    n = len(burst)
                    action = await driver.edit("burst", "Xmlrc burst", f"Burst {n}.", f"burst {n}")
                    burst.extend(action.rows)

            await edits(BURST // 3)
            # Stop rc2udp in the middle of the burst, once it has sent part of it ...
            polled = got["rc2udp"]
            await wait_for(
                lambda: any(d.change.rcid in burst for d in polled), 30, "rc2udp in the burst"
            )
            first_exit = await rc2udp.stop()
            state = json.loads(rc2udp.state_file.read_text())["wikis"][wiki.api_url]
            stopped_at = ResumePoint.from_json(state)
            await edits(BURST // 3)
            # ... and start it again, which resumes from its state file.
            await rc2udp.start(since=start)
            await edits(BURST - 2 * (BURST // 3))
            oracle = driver.oracle()
            now_in_api = [driver.change(item) for item in await driver.all_rows()]
            final = {c.rcid: c for c in now_in_api if c.rcid is not None and c.timestamp >= start}
            labels = {label: driver.rcids(label) for label in (*LABELS, "burst")}

        def complete(path: str) -> bool:
            want = final if path == "rc2udp" else oracle
            return set(want) <= {d.change.rcid for d in got[path]}

        for path in PATHS:
            await wait_for(partial(complete, path), 60, f"every change on {path}")
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive now
        second_exit = await rc2udp.stop()
    finally:
        if rc2udp is not None:
            await rc2udp.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in readers.values():
            await client.close()
        for bridge in bridges.values():
            await bridge.stop()
    run = Run(oracle=oracle, final=final, labels=labels, directory=directory)
    for path in PATHS:
        run.delivered[path] = got[path]
        run.accepted[path] = bridges[path].stats.accepted
        run.rejected[path] = dict(bridges[path].stats.rejected)
    run.stopped_at = stopped_at
    run.rc2udp_exits = [first_exit, second_exit]
    run.rc2udp_log = rc2udp.log.read_text(errors="replace")
    return run


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(prosody: ProsodyServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("mediawiki-e2e")
    with MediaWikiServer(directory / "wiki") as wiki:
        async with asyncio.timeout(240):
            return await _scenario(prosody, wiki, directory)


def _truth(run: Run, change: RecentChange) -> RecentChange:
    assert change.rcid is not None
    return run.oracle.get(change.rcid) or run.final[change.rcid]


def _report(run: Run, paths: tuple[str, ...]) -> FidelityReport:
    report = FidelityReport()
    for path in paths:
        for delivery in run.delivered[path]:
            change = delivery.change
            report.compare(path, change, _truth(run, change), feed=path != "rc2udp")
    return report


def _check_path(run: Run, path: str, required: set[int], allowed: set[int]) -> None:
    """Each required change arrived once, nothing else, in its room, every field right."""
    rcids = [d.change.rcid for d in run.delivered[path] if d.change.rcid is not None]
    assert len(rcids) == len(run.delivered[path]), f"{path}: a change without an rcid"
    assert len(rcids) == len(set(rcids)), f"{path}: a change arrived twice"
    assert set(rcids) >= required, f"{path}: missing {sorted(required - set(rcids))}"
    assert set(rcids) <= allowed, f"{path}: unexpected {sorted(set(rcids) - allowed)}"
    # The bridge took in each change exactly once: nothing was sent twice.
    assert run.accepted[path] == len(rcids)
    assert run.rejected[path] == {}
    room = "testwiki-" + path.replace("+", "-") + "@"
    assert all(d.room.startswith(room) for d in run.delivered[path])
    for label, is_right in LABELS.items():
        (rcid,) = run.labels[label]  # each action made one row
        assert is_right(run.oracle[rcid]), (label, run.oracle[rcid])
    report = _report(run, (path,))
    assert report.mismatches == [], report.table()


def test_json_feed_delivers_every_change_once_as_the_api_reports_it(run: Run) -> None:
    _check_path(run, "json", set(run.oracle), set(run.oracle))


def test_xml_feed_delivers_every_change_once_as_the_api_reports_it(run: Run) -> None:
    _check_path(run, "xml", set(run.oracle), set(run.oracle))


@pytest.mark.parametrize("path", ["json+prefix", "xml+prefix"])
def test_prefixed_feeds_deliver_every_change_once(run: Run, path: str) -> None:
    _check_path(run, path, set(run.oracle), set(run.oracle))


def test_rc2udp_polling_delivers_every_change_once_across_a_restart(run: Run) -> None:
    # Required: every row the API still has; allowed too: the rows of the page
    # deleted meanwhile (MediaWiki drops them from recentchanges), if polled in time.
    _check_path(run, "rc2udp", set(run.final), set(run.final) | set(run.oracle))
    assert run.rc2udp_exits == [0, 0], run.rc2udp_log
    # It was stopped in the middle of the burst, its state file holding part of it ...
    burst = set(run.labels["burst"])
    assert len(burst) == BURST
    assert run.stopped_at is not None
    assert burst & run.stopped_at.rcids
    # ... and the restart continued from its state file: the burst is whole, once.
    delivered = [d.change.rcid for d in run.delivered["rc2udp"]]
    assert sorted(rcid for rcid in delivered if rcid in burst) == sorted(burst)


def test_fidelity_table(run: Run) -> None:
    """The comparison at a glance; also in fidelity.txt next to the test's files."""
    report = _report(run, PATHS)
    table = report.table()
    (run.directory / "fidelity.txt").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    assert report.mismatches == []
    for path in FEEDS:
        n = report.changes[path]
        assert n == len(run.oracle)
        for name in ("type", "ns", "title", "user", "timestamp", "comment", "rcid", "bot", "minor"):
            assert report.count(path, name, MATCH) == n, (path, name)
        for name in ("pageid", "userid", "tags", "parsedcomment"):
            assert report.count(path, name, NOT_CARRIED) == n, (path, name)
    n = report.changes["rc2udp"]
    for name in FIELD_NAMES:
        if name != "redirect":
            assert report.count("rc2udp", name, MATCH) == n, name
    assert not any(report.count(p, name, DIFFERS) for p in PATHS for name in FIELD_NAMES)
