"""A real MediaWiki through a real Redis, end to end: every change, once, whole.

One wiki (Debian's MediaWiki 1.39, SQLite, ``php -S``, php-redis), one
throwaway ``redis-server`` with a password, one Prosody. MediaWiki's stock
``RedisPubSubFeedEngine`` PUBLISHes each change, with ``'class'`` given as
the README says (the namespaced class where it exists, else 1.39's global
name), on two channels:

- ``redis-json``: ``JSONRCFeedFormatter`` on ``testwiki.json``, read by a
  bridge that SUBSCRIBEs to that channel;
- ``redis-xml``: ``XMLRCFeedFormatter`` on ``testwiki.xml``, read by a
  bridge that PSUBSCRIBEs to ``testwiki.x*``;

each bridge with only a ``[redis]`` section (``udp.listen = []``), into its
own room. A third path, ``udp-class``, is the README's UDP entry with its
``'class'`` key, to show 1.39 accepts it. Every change of every kind
(`tests.mediawiki.actions`), then a burst of edits, must reach each room once,
every field equal to what the API reports (`tests.mediawiki.fidelity`).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from harness.mediawiki import REDIS_ENGINE, UDP_ENGINE, MediaWikiServer, RCFeed
from harness.prosody import ProsodyServer
from harness.redis import RedisServer
from rcclient import Delivery, RCClient
from tests.helpers import bridge_config, reader, running_bridge, wait_for
from tests.mediawiki.actions import WikiDriver
from tests.mediawiki.fidelity import DIFFERS, MATCH, NOT_CARRIED, FidelityReport
from tests.mediawiki.test_end_to_end import LABELS
from udp2xmpp.bridge import Bridge
from udp2xmpp.source.redis import RedisFeed
from xmlrc.wire import RecentChange, decode_datagram
from xmlrc.wire.model import FIELD_NAMES

BURST = 12
#: path -> (formatter, the channel MediaWiki publishes on, the bridge's [redis] keys).
REDIS_PATHS: dict[str, tuple[str, str, dict[str, list[str]]]] = {
    "redis-json": ("JSONRCFeedFormatter", "testwiki/json", {"channels": ["testwiki.json"]}),
    "redis-xml": ("XMLRCFeedFormatter", "testwiki/xml", {"patterns": ["testwiki.x*"]}),
}
PATHS = (*REDIS_PATHS, "udp-class")


@dataclass
class Run:
    oracle: dict[int, RecentChange]
    labels: dict[str, list[int]]
    delivered: dict[str, list[Delivery]] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per Redis path: messages the feed read, its reconnects, and whether it was healthy.
    feed_received: dict[str, int] = field(default_factory=dict)
    feed_reconnects: dict[str, int] = field(default_factory=dict)
    feed_healthy: dict[str, bool] = field(default_factory=dict)


async def _read(client: RCClient, into: list[Delivery]) -> None:
    async for delivery in client.deliveries():
        into.append(delivery)


def _feed(bridge: Bridge) -> RedisFeed:
    (feed,) = bridge.feeds
    assert isinstance(feed, RedisFeed)
    return feed


def _has_joined(bridge: Bridge) -> bool:
    return len(bridge.sink.joined_rooms()) == 1


def _subscribed(bridge: Bridge) -> bool:
    return _feed(bridge).connected


async def _scenario(prosody: ProsodyServer, redis: RedisServer, wiki: MediaWikiServer) -> Run:
    bridges: dict[str, Bridge] = {}
    readers: list[RCClient] = []
    got: dict[str, list[Delivery]] = {path: [] for path in PATHS}
    tasks: list[asyncio.Task[None]] = []
    try:
        for path, (_formatter, _channel, keys) in REDIS_PATHS.items():
            config = bridge_config(
                prosody,
                udp={"listen": []},
                rooms={"room": "{wiki}-" + path, "wikis": [wiki.wiki_id]},
                redis={"url": redis.url, "password": redis.password, **keys},
            )
            bridges[path] = await running_bridge(config)
        config = bridge_config(prosody, rooms={"room": "{wiki}-udp-class", "wikis": [wiki.wiki_id]})
        bridges["udp-class"] = await running_bridge(config)
        for path, bridge in bridges.items():
            await wait_for(partial(_has_joined, bridge), what=f"the {path} bridge's room")
            if bridge.feeds:
                await wait_for(partial(_subscribed, bridge), what=f"the {path} subscription")
            client = reader(prosody, bridge.sink.joined_rooms())
            await client.connect()
            readers.append(client)
            tasks.append(asyncio.create_task(_read(client, got[path])))

        feeds = {
            path: RCFeed(
                f"redis://:{redis.password}@{redis.host}:{redis.port}/{channel}",
                formatter,
                engine=REDIS_ENGINE,
            )
            for path, (formatter, channel, _keys) in REDIS_PATHS.items()
        }
        host, port = bridges["udp-class"].addresses[0]
        feeds["udp-class"] = RCFeed(f"udp://{host}:{port}", engine=UDP_ENGINE)
        wiki.set_rc_feeds(feeds)

        async with WikiDriver(wiki) as driver:
            await driver.every_kind_of_change("redis")
            for n in range(BURST):
                await driver.edit("burst", "Xmlrc redis burst", f"Burst {n}.", f"burst {n}")
            oracle = driver.oracle()
            labels = {label: driver.rcids(label) for label in (*LABELS, "burst")}

        def complete(path: str) -> bool:
            return set(oracle) <= {d.change.rcid for d in got[path]}

        for path in PATHS:
            await wait_for(partial(complete, path), 60, f"every change on {path}")
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive now
        run = Run(oracle=oracle, labels=labels)
        for path in REDIS_PATHS:
            feed = _feed(bridges[path])
            run.feed_received[path] = feed.stats.received
            run.feed_reconnects[path] = feed.stats.reconnects
            run.feed_healthy[path] = feed.health()[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in readers:
            await client.close()
        for bridge in bridges.values():
            await bridge.stop()
    for path in PATHS:
        run.delivered[path] = got[path]
        run.accepted[path] = bridges[path].stats.accepted
        run.rejected[path] = dict(bridges[path].stats.rejected)
    return run


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, check=True, timeout=60)
    if "redis" not in modules.stdout.split():  # else MediaWiki logs an error, sends nothing
        raise RuntimeError(
            "php-redis is not installed: run `make install` (apt-get install php-redis)"
        )
    with RedisServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(
    prosody: ProsodyServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    directory: Path = tmp_path_factory.mktemp("mediawiki-redis-e2e")
    with MediaWikiServer(directory / "wiki") as wiki:
        async with asyncio.timeout(240):
            return await _scenario(prosody, redis_server, wiki)


def _report(run: Run, paths: tuple[str, ...]) -> FidelityReport:
    report = FidelityReport()
    for path in paths:
        for delivery in run.delivered[path]:
            change = delivery.change
            assert change.rcid is not None
            report.compare(path, change, run.oracle[change.rcid], feed=True)
    return report


@pytest.mark.parametrize("path", PATHS)
def test_every_change_arrives_once_in_its_room_as_the_api_reports_it(run: Run, path: str) -> None:
    rcids = [d.change.rcid for d in run.delivered[path]]
    assert None not in rcids, f"{path}: a change without an rcid"
    assert len(rcids) == len(set(rcids)), f"{path}: a change arrived twice"
    assert set(rcids) == set(run.oracle), f"{path}: {set(run.oracle) ^ set(rcids)}"
    assert run.accepted[path] == len(rcids)
    assert run.rejected[path] == {}
    assert all(d.room.startswith(f"testwiki-{path}@") for d in run.delivered[path])
    for label, is_right in LABELS.items():
        (rcid,) = run.labels[label]  # each action made one row
        assert is_right(run.oracle[rcid]), (label, run.oracle[rcid])
    assert len(run.labels["burst"]) == BURST
    report = _report(run, (path,))
    assert report.mismatches == [], report.table()
    n = report.changes[path]
    assert n == len(run.oracle)
    for name in ("type", "ns", "title", "user", "timestamp", "comment", "rcid", "bot", "minor"):
        assert report.count(path, name, MATCH) == n, (path, name)
    for name in ("pageid", "userid", "tags", "parsedcomment"):
        assert report.count(path, name, NOT_CARRIED) == n, (path, name)
    assert not any(report.count(path, name, DIFFERS) for name in FIELD_NAMES)


@pytest.mark.parametrize("path", list(REDIS_PATHS))
def test_the_redis_feeds_read_each_message_once_and_stayed_subscribed(run: Run, path: str) -> None:
    assert run.feed_received[path] == len(run.oracle)  # one message per change, none bad
    assert run.feed_reconnects[path] == 0
    assert run.feed_healthy[path] is True


def test_redis_and_udp_carry_the_same_fields(run: Run) -> None:
    """The Redis engine publishes the formatter's line as UDP sends it: the same verdicts."""
    report = _report(run, PATHS)
    print("\n" + report.table())
    for name in FIELD_NAMES:
        counts = {
            path: {s: report.count(path, name, s) for s in (MATCH, NOT_CARRIED)} for path in PATHS
        }
        assert counts["redis-json"] == counts["udp-class"], (name, counts)
        assert counts["redis-xml"] == counts["udp-class"], (name, counts)


async def test_the_example_localsettings_entries_work_on_this_mediawiki(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """examples/LocalSettings.rcfeeds.php as written (its Redis entry uncommented),
    only the addresses and the password changed: both entries send the change."""
    text = (Path(__file__).parents[2] / "examples" / "LocalSettings.rcfeeds.php").read_text()
    start = text.index("# $wgRCFeeds['xmlrc-redis']")
    redis_entry = "\n".join(line[2:] for line in text[start:].splitlines() if line.startswith("# "))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    settings = (text[:start] + redis_entry + "\n").replace(
        "'udp://127.0.0.1:9390'", f"'udp://127.0.0.1:{port}'"
    )
    redis_uri = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/rc"
    settings = settings.replace("'redis://:PASSWORD@127.0.0.1:6379/rc'", f"'{redis_uri}'")
    assert f"udp://127.0.0.1:{port}" in settings and redis_uri in settings
    example = tmp_path / "rcfeeds.php"
    example.write_text(settings)
    subscriber = aioredis.Redis.from_url(redis_server.url, password=redis_server.password)
    pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe("rc")
        with MediaWikiServer(tmp_path / "wiki") as wiki:
            wiki.set_rc_feeds({})
            with wiki.runtime_settings.open("a") as runtime:  # after the harness's lines
                runtime.write(f"require '{example}';\n")
            async with WikiDriver(wiki) as driver:
                action = await driver.edit("example", "Example feeds", "Text.", "the example")
            (rcid,) = action.rows
            loop = asyncio.get_running_loop()
            datagram = await asyncio.wait_for(loop.sock_recv(sock, 65535), 20)
            message = None
            for _ in range(100):  # bounded: 100 reads of at most 0.2 s
                message = await pubsub.get_message(timeout=0.2)
                if message is not None:
                    break
            assert message is not None, "nothing was published on Redis"
    finally:
        sock.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
        await subscriber.aclose()
    for data in (datagram, message["data"]):
        change = decode_datagram(data)
        assert isinstance(change, RecentChange), change
        assert (change.rcid, change.title) == (rcid, "Example feeds")
