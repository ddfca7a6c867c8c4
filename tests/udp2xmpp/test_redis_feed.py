"""The Redis feed against a real redis-server (harness.redis): messages, ACLs, a restart.

Messages are published by hand, as MediaWiki's RedisPubSubFeedEngine does
(the formatter's line, JSON or XML, no prefix). The last test runs a whole
bridge with only a [redis] source (``udp.listen = []``) into a real Prosody.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import generate_latest

from harness.prosody import ProsodyServer
from harness.redis import RedisServer
from tests.fixtures import JSON_FEED_PORT, XML_FEED_PORT, packets
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from udp2xmpp.config import RedisSettings
from udp2xmpp.httpd import health
from udp2xmpp.source.redis import RedisFeed
from xmlrc.wire import RecentChange
from xmlrc.xmpp.session import Backoff


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest_asyncio.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password)
    try:
        yield client
    finally:
        await client.aclose()


class _Intake:
    def __init__(self) -> None:
        self.got: list[tuple[RecentChange, str]] = []

    def __call__(self, change: RecentChange, origin: str) -> bool:
        self.got.append((change, origin))
        return True


def _settings(server: RedisServer, **keys: Any) -> RedisSettings:
    values: dict[str, Any] = {"url": server.url, "password": server.password}
    values.update(keys)
    return RedisSettings(**values)


async def _started(settings: RedisSettings, intake: _Intake) -> RedisFeed:
    feed = RedisFeed(settings, backoff=Backoff(initial=0.05, maximum=0.2))
    await feed.start(intake)
    await wait_for(lambda: feed.connected, 20, "the feed to subscribe")
    return feed


async def test_json_and_xml_messages_on_channels_and_patterns_become_changes(
    redis_server: RedisServer, publisher: aioredis.Redis
) -> None:
    intake = _Intake()
    feed = await _started(_settings(redis_server, channels=("rc",), patterns=("wiki.*",)), intake)
    try:
        assert feed.health()[0] is True
        json_lines, xml_lines = packets(JSON_FEED_PORT), packets(XML_FEED_PORT)
        assert await publisher.publish("rc", json_lines[0]) == 1
        assert await publisher.publish("wiki.testwiki", xml_lines[1]) == 1
        assert await publisher.publish("elsewhere", json_lines[2]) == 0  # not subscribed
        assert await publisher.publish("rc", b"{broken") == 1
        await wait_for(lambda: feed.stats.received == 3, 20, "three messages")
        (first, origin1), (second, origin2) = intake.got
        assert (origin1, origin2) == ("redis:rc", "redis:wiki.testwiki")
        assert (first.rcid, second.rcid) == (13, 14)
        assert first.wiki == second.wiki == "testwiki"
        assert feed.stats.accepted == 2
        assert feed.stats.rejected == {"bad_json": 1}
    finally:
        await feed.stop()
    assert feed.health()[0] is False


async def test_an_acl_user_limited_to_pubsub_can_subscribe(
    redis_server: RedisServer, publisher: aioredis.Redis
) -> None:
    intake = _Intake()
    settings = _settings(
        redis_server,
        channels=("rc",),
        username=redis_server.acl_user,
        password=redis_server.acl_password,
    )
    feed = await _started(settings, intake)
    try:
        assert await publisher.publish("rc", packets(JSON_FEED_PORT)[3]) == 1
        await wait_for(lambda: len(intake.got) == 1, 20, "the change")
    finally:
        await feed.stop()


async def test_a_wrong_password_keeps_the_feed_unhealthy_and_retrying(
    redis_server: RedisServer,
) -> None:
    feed = RedisFeed(
        _settings(redis_server, channels=("rc",), password="wrong-password"),
        backoff=Backoff(initial=0.05, maximum=0.1),
    )
    await feed.start(_Intake())
    try:
        await wait_for(lambda: feed.last_error is not None, 20, "the refusal")
        ok, details = feed.health()
        assert ok is False and details["connected"] is False
        assert "password" in details["last_error"].lower() or "auth" in details["last_error"]
        assert "wrong-password" not in json.dumps(details)
    finally:
        await feed.stop()


async def test_a_redis_restart_mid_stream_the_feed_reconnects_and_goes_on(
    redis_server: RedisServer,
) -> None:
    intake = _Intake()
    feed = await _started(_settings(redis_server, channels=("rc",)), intake)
    lines = packets(JSON_FEED_PORT)
    try:
        client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password)
        try:
            for line in lines[:5]:
                assert await client.publish("rc", line) == 1
        finally:
            await client.aclose()
        await wait_for(lambda: len(intake.got) == 5, 20, "the first five")

        redis_server.kill()  # abruptly, mid-stream
        await wait_for(lambda: not feed.connected, 20, "the feed to notice")
        assert feed.health()[0] is False
        metrics = {m.name: m for m in feed.collect_metrics()}
        assert metrics["udp2xmpp_redis_connected"].samples[0].value == 0
        redis_server.start()  # same port, same passwords
        await wait_for(lambda: feed.connected, 30, "the feed to subscribe again")
        assert feed.stats.reconnects == 1
        assert feed.health()[0] is True

        client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password)
        try:
            for line in lines[5:]:
                assert await client.publish("rc", line) == 1
        finally:
            await client.aclose()
        await wait_for(lambda: len(intake.got) == len(lines), 20, "the rest")
        assert [c.rcid for c, _ in intake.got] == [json.loads(line)["id"] for line in lines]
        metrics = {m.name: m for m in feed.collect_metrics()}
        assert metrics["udp2xmpp_redis_reconnects"].samples[0].value == 1
        assert metrics["udp2xmpp_redis_connected"].samples[0].value == 1
    finally:
        await feed.stop()


async def test_a_bridge_with_only_a_redis_source_publishes_to_its_room(
    prosody: ProsodyServer, redis_server: RedisServer, publisher: aioredis.Redis
) -> None:
    config = bridge_config(
        prosody,
        udp={"listen": []},
        rooms={"room": "{wiki}-redis-only", "wikis": ["testwiki"]},
        redis={"url": redis_server.url, "password": redis_server.password, "channels": ["rc"]},
    )
    assert config.udp.listen == ()
    bridge = await running_bridge(config)
    client = None
    try:
        assert bridge.sources == [] and len(bridge.feeds) == 1
        (feed,) = bridge.feeds
        assert isinstance(feed, RedisFeed)
        await wait_for(lambda: feed.connected, 20, "the bridge's feed to subscribe")
        await wait_for(lambda: len(bridge.sink.joined_rooms()) == 1, 20, "the room")
        client = reader(prosody, bridge.sink.joined_rooms())
        await client.connect()
        lines = packets(XML_FEED_PORT)[:4]
        for line in lines:
            assert await publisher.publish("rc", line) == 1
        got = await collect(client, len(lines))
        assert [d.change.rcid for d in got] == [13, 14, 15, 16]
        assert all(d.room.startswith("testwiki-redis-only@") for d in got)
        assert bridge.stats.accepted == len(lines) and not bridge.stats.rejected
        ok, details = health(bridge)
        assert ok is True and details["udp"] == []
        assert details["feeds"]["redis"]["connected"] is True
        scraped = generate_latest(bridge.metrics).decode()
        assert "udp2xmpp_redis_connected 1.0" in scraped
        assert "udp2xmpp_redis_messages_received_total 4.0" in scraped
        # Redis goes away: the bridge is unhealthy (its only source is gone) until it is back.
        redis_server.stop()
        await wait_for(lambda: not feed.connected, 20, "the feed to notice")
        ok, details = health(bridge)
        assert ok is False and details["status"] == "unavailable"
        assert "udp2xmpp_redis_connected 0.0" in generate_latest(bridge.metrics).decode()
        redis_server.start()
        await wait_for(lambda: health(bridge)[0], 30, "the bridge to be healthy again")
    finally:
        if client is not None:
            await client.close()
        await bridge.stop()


async def test_the_feed_reads_a_tls_redis_and_verifies_its_certificate(tmp_path: Any) -> None:
    """rediss:// with ca_file: a real redis-server speaking TLS only."""
    with RedisServer(tls=True) as server:
        publisher = aioredis.Redis.from_url(
            server.url, password=server.password, ssl_ca_certs=str(server.ca_file)
        )
        intake = _Intake()
        feed = await _started(
            _settings(server, channels=("rc",), ca_file=str(server.ca_file)), intake
        )
        try:
            assert await publisher.publish("rc", packets(JSON_FEED_PORT)[0]) == 1
            await wait_for(lambda: len(intake.got) == 1, 20, "the message over TLS")
            assert intake.got[0][1] == "redis:rc"
        finally:
            await feed.stop()
            await publisher.aclose()
        # Without the CA the certificate is not trusted: the feed never subscribes.
        untrusting = RedisFeed(
            _settings(server, channels=("rc",)), backoff=Backoff(initial=0.05, maximum=0.2)
        )
        await untrusting.start(_Intake())
        try:
            await wait_for(lambda: untrusting.last_error is not None, 20, "a failed attempt")
            assert "CERTIFICATE_VERIFY_FAILED" in str(untrusting.last_error)
            assert not untrusting.connected and untrusting.health()[0] is False
        finally:
            await untrusting.stop()
