"""The EventStreams source against the local KafkaSSE-speaking server (harness.eventstreams):
resume, forced closes, stalls, 429, canaries, the allow/deny lists, the state file,
metrics and health; and its config section. No XMPP here (see test_eventstreams_prosody)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from harness.eventstreams import EventStreamsServer, load_jsonl, with_meta
from tests.helpers import wait_for
from udp2xmpp.bridge import make_feeds
from udp2xmpp.config import ConfigError, EventStreamsSettings, parse_config
from udp2xmpp.source.eventstreams import EventStreamsFeed, retry_after_seconds, wiki_matcher
from xmlrc.wire import RecentChange, decode_datagram
from xmlrc.wire.jsonfeed import change_from_json

DATA = Path(__file__).resolve().parent.parent / "data"
RECORDED = load_jsonl(str(DATA / "eventstreams" / "recentchange.jsonl"))
FAST = {"stall_seconds": 5.0, "backoff_initial": 0.02, "backoff_max": 0.1}


def settings(url: str, **values: Any) -> EventStreamsSettings:
    """Through the real parser, so the tests use what a config file can say."""
    data = {
        "xmpp": {"jid": "rcbot@localhost", "password": "x"},
        "rooms": {"service": "conference.localhost"},
        "eventstreams": {"url": url, "since": "0", **FAST, **values},
    }
    config = parse_config(data)
    assert config.eventstreams is not None
    return config.eventstreams


class Collected:
    """An `accept` that keeps what it is given."""

    def __init__(self) -> None:
        self.changes: list[RecentChange] = []

    def __call__(self, change: RecentChange, origin: str) -> bool:
        assert origin == "eventstreams"
        self.changes.append(change)
        return True


@pytest.fixture
async def server() -> AsyncIterator[EventStreamsServer]:
    srv = EventStreamsServer(RECORDED)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def run_feed(
    srv: EventStreamsServer, count: int, **values: Any
) -> tuple[EventStreamsFeed, Collected]:
    """A feed reading `srv` until `count` changes arrived (then stopped)."""
    feed = EventStreamsFeed(settings(srv.url(), **values))
    got = Collected()
    await feed.start(got)
    try:
        await wait_for(lambda: len(got.changes) >= count, 20, f"{count} changes")
    finally:
        await feed.stop()
    return feed, got


def expected(events: list[dict[str, Any]]) -> list[RecentChange]:
    return [change_from_json(e) for e in events]


async def test_reads_every_recorded_event_in_order_through_the_one_decoder(
    server: EventStreamsServer,
) -> None:
    feed, got = await run_feed(server, len(RECORDED))
    assert got.changes == expected(RECORDED)
    assert server.requests[0]["query"] == {"since": "0"}
    assert server.requests[0]["accept"] == "text/event-stream"
    assert sum(feed.events.values()) == 50
    assert feed.events["wikidatawiki"] == 11


async def test_forced_closes_resume_from_the_last_event_id_and_lose_nothing() -> None:
    for abrupt in (False, True):
        srv = EventStreamsServer(RECORDED, close_after_events=7, abrupt=abrupt)
        await srv.start()
        try:
            feed, got = await run_feed(srv, len(RECORDED))
        finally:
            await srv.stop()
        assert got.changes == expected(RECORDED)
        assert feed.reconnects["server_closed"] >= 7
        assert feed.duplicates == 0
        resumed = [r["last_event_id"] for r in srv.requests[1:]]
        assert len(resumed) >= 7 and all(resumed)
        # The first resume names the position after the 7th message: offset 7.
        first = json.loads(resumed[0])
        assert {"topic": "eqiad.mediawiki.recentchange", "partition": 0, "offset": 7} in first
        assert all("since" not in r["query"] for r in srv.requests[1:])


async def test_timestamp_ids_resume_too() -> None:
    srv = EventStreamsServer(RECORDED, close_after_events=9, id_mode="timestamp")
    await srv.start()
    try:
        _feed, got = await run_feed(srv, len(RECORDED))
    finally:
        await srv.stop()
    assert got.changes == expected(RECORDED)
    assert "timestamp" in srv.requests[1]["last_event_id"]


async def test_a_stall_is_noticed_and_the_stream_resumed(server: EventStreamsServer) -> None:
    server.stall_next(after_events=5)
    feed, got = await run_feed(server, len(RECORDED), stall_seconds=0.3)
    assert feed.reconnects["stall"] == 1
    assert got.changes == expected(RECORDED)


async def test_keepalive_comments_are_not_a_stall() -> None:
    srv = EventStreamsServer(RECORDED[:3], keepalive=0.05)
    await srv.start()
    feed = EventStreamsFeed(settings(srv.url(), stall_seconds=0.4))
    got = Collected()
    await feed.start(got)
    try:
        await wait_for(lambda: len(got.changes) == 3, 20, "3 changes")
        await wait_for(lambda: srv.sent >= 3 and feed.last_event_age() > 1.0, 20, "1 s idle")
        assert feed.reconnects["stall"] == 0
        srv.publish(RECORDED[3:6])
        await wait_for(lambda: len(got.changes) == 6, 20, "3 more")
    finally:
        await feed.stop()
        await srv.stop()
    assert srv.connections == 1


async def test_429_waits_the_retry_after_it_names(server: EventStreamsServer) -> None:
    server.refuse_next(429, Retry_After="1")
    feed, got = await run_feed(server, len(RECORDED))
    assert feed.reconnects["http_429"] == 1
    assert feed.history[0] == ("http_429", 1.0)
    assert got.changes == expected(RECORDED)


async def test_5xx_backs_off_and_retries(server: EventStreamsServer) -> None:
    server.refuse_next(503, count=2)
    feed, got = await run_feed(server, len(RECORDED))
    assert feed.reconnects["http_5xx"] == 2
    assert 0 < feed.last_wait <= 0.1 * 1.5
    assert got.changes == expected(RECORDED)


async def test_no_server_is_a_network_error_retried() -> None:
    srv = EventStreamsServer(RECORDED[:2])
    await srv.start()
    url = srv.url()
    await srv.stop()  # nothing listens on that port now
    feed = EventStreamsFeed(settings(url))
    await feed.start(Collected())
    try:
        await wait_for(lambda: feed.reconnects["network"] >= 2, 20, "two failed attempts")
    finally:
        await feed.stop()
    assert feed.health()[1]["connected"] is False


async def test_canaries_are_dropped_and_counted() -> None:
    srv = EventStreamsServer(RECORDED, canary_every=5)
    await srv.start()
    try:
        feed, got = await run_feed(srv, len(RECORDED))
        await wait_for(lambda: feed.canaries == 10, 5, "10 canaries")
    finally:
        await srv.stop()
    assert got.changes == expected(RECORDED)
    assert all(c.wiki != "canarywiki" for c in got.changes)


async def test_the_allow_and_deny_lists_route_exactly_what_they_say(
    server: EventStreamsServer,
) -> None:
    allow, deny = ["enwiki", "*wiktionary", "commons*", "zh?iki"], ["commonswiki"]
    wanted = [
        e
        for e in RECORDED
        if (e["wiki"] in ("enwiki", "zhwiki") or e["wiki"].endswith("wiktionary"))
        and e["wiki"] != "commonswiki"
    ]
    assert {e["wiki"] for e in wanted} == {"enwiki", "enwiktionary", "plwiktionary", "zhwiki"}
    feed = EventStreamsFeed(settings(server.url(), wikis=allow, exclude_wikis=deny))
    got = Collected()
    await feed.start(got)
    try:
        await wait_for(lambda: server.sent >= 50 and feed.position is not None, 20, "all sent")
        await wait_for(lambda: len(got.changes) == len(wanted), 20, "the allowed ones")
    finally:
        await feed.stop()
    assert got.changes == expected(wanted)
    assert feed.filtered["deny"] == 9  # commonswiki
    assert feed.filtered["allow"] == 50 - 9 - len(wanted)


def test_wiki_matcher_deny_wins_and_empty_allow_allows_all() -> None:
    verdict = wiki_matcher((), ("test*",))
    assert verdict("enwiki") is None and verdict("testwiki") == "deny"
    verdict = wiki_matcher(("enwiki", "*wiki"), ("dewiki",))
    assert verdict("frwiki") is None and verdict("dewiki") == "deny"
    assert verdict("enwiktionary") == "allow"


async def test_the_state_file_resumes_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "eventstreams.state"
    srv = EventStreamsServer(RECORDED[:20])
    await srv.start()
    try:
        first, got1 = await run_feed(srv, 20, state_file=str(state))
        saved = json.loads(state.read_text())
        assert saved["last_event_id"] == first.position
        assert len(saved["recent"]) == 20
        srv.publish(RECORDED[20:])  # published while the bridge was stopped
        second, got2 = await run_feed(srv, 30, state_file=str(state))
    finally:
        await srv.stop()
    assert got1.changes + got2.changes == expected(RECORDED)
    restart = srv.requests[-1]
    assert restart["last_event_id"] == first.position
    assert restart["query"] == {}  # since is for the very first start only
    assert second.duplicates == 0


async def test_an_overlap_after_a_resume_is_dropped_by_change_id(tmp_path: Path) -> None:
    srv = EventStreamsServer(RECORDED, close_after_events=10, resume_overlap=3)
    await srv.start()
    try:
        feed, got = await run_feed(srv, len(RECORDED))
        await wait_for(lambda: feed.duplicates >= 12, 10, "the overlaps")
    finally:
        await srv.stop()
    assert got.changes == expected(RECORDED)  # once each, in order


async def test_the_overlap_is_dropped_across_a_restart_too(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    srv = EventStreamsServer(RECORDED[:25], resume_overlap=4)
    await srv.start()
    try:
        _first, got1 = await run_feed(srv, 25, state_file=str(state))
        srv.publish(RECORDED[25:])
        second, got2 = await run_feed(srv, 25, state_file=str(state))
        await wait_for(lambda: second.duplicates == 4, 10, "4 repeats")
    finally:
        await srv.stop()
    assert got1.changes + got2.changes == expected(RECORDED)


async def test_other_streams_on_the_same_connection_are_skipped() -> None:
    revision = {
        "$schema": "/mediawiki/revision/create/2.0.0",
        "meta": {"id": "r1", "dt": "2026-01-01T00:00:00Z", "domain": "en.wikipedia.org"},
        "database": "enwiki",
        "page_title": "X",
        "rev_id": 1,
    }
    srv = EventStreamsServer(RECORDED[:4])
    srv.publish([revision], stream="revision-create")
    srv.publish(RECORDED[4:8])
    await srv.start()
    try:
        feed = EventStreamsFeed(settings(srv.url("recentchange,revision-create")))
        got = Collected()
        await feed.start(got)
        try:
            await wait_for(lambda: len(got.changes) == 8 and feed.skipped == 1, 20, "all")
        finally:
            await feed.stop()
    finally:
        await srv.stop()
    assert got.changes == expected(RECORDED[:8])
    ids = json.loads(feed.position or "[]")
    assert len(ids) == 4  # two topics per stream


async def test_the_mediawiki_139_feed_packets_in_the_envelope_decode_as_over_udp() -> None:
    packets = [
        json.loads(line)
        for line in (DATA / "feed-packets.jsonl").read_text().splitlines()
        if json.loads(line)["port"] == 9390
    ]
    events = [with_meta(json.loads(p["data"]), n) for n, p in enumerate(packets)]
    srv = EventStreamsServer(events, close_after_events=4)
    await srv.start()
    try:
        _feed, got = await run_feed(srv, len(events))
    finally:
        await srv.stop()
    over_udp = [decode_datagram(p["data"].encode()) for p in packets]
    assert got.changes == over_udp


async def test_metrics_bound_the_wiki_labels_and_health_follows_the_last_event(
    server: EventStreamsServer,
) -> None:
    feed, _got = await run_feed(server, 50, max_wiki_labels=3)
    families = {m.name: m for m in feed.collect_metrics()}
    by_wiki = {
        s.labels["wiki"]: s.value
        for s in families["udp2xmpp_eventstreams_events"].samples
        if s.name.endswith("_total")
    }
    assert set(by_wiki) == {"wikidatawiki", "enwiki", "commonswiki", "other"}
    assert sum(by_wiki.values()) == 50
    lag = families["udp2xmpp_eventstreams_lag_seconds"]
    count = [s.value for s in lag.samples if s.name.endswith("_count")]
    assert count == [50]
    ok, details = feed.health()
    assert ok and details["connected"] is False
    stale = EventStreamsFeed(settings(server.url(), stall_seconds=0.1))
    await wait_for(lambda: stale.last_event_age() > 0.2, 5, "age past twice the stall")
    assert stale.health()[0] is False


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("120", 0.0) == 120.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_seconds("soon", 0.0) is None
    assert retry_after_seconds(None, 0.0) is None


# -- the config section --------------------------------------------------------------------


def config(**values: Any) -> Any:
    data: dict[str, Any] = {
        "xmpp": {"jid": "rcbot@localhost", "password": "x"},
        "rooms": {"service": "conference.localhost"},
        "eventstreams": values,
    }
    return parse_config(data)


def test_the_section_defaults_and_make_feeds() -> None:
    settings_ = config(contact="ops@example.org").eventstreams
    assert settings_ == EventStreamsSettings(contact="ops@example.org")
    assert settings_.url == "https://stream.wikimedia.org/v2/stream/recentchange"
    feeds = make_feeds(config(contact="ops@example.org"))
    assert [f.name for f in feeds] == ["eventstreams"]
    assert feeds[0].user_agent == "xmlrc-udp2xmpp/0.1 (ops@example.org)"  # type: ignore[attr-defined]
    without = parse_config(
        {"xmpp": {"jid": "rcbot@localhost", "password": "x"}, "rooms": {"service": "c.localhost"}}
    )
    assert without.eventstreams is None and make_feeds(without) == []


def test_no_udp_at_all_with_eventstreams() -> None:
    data: dict[str, Any] = {
        "xmpp": {"jid": "rcbot@localhost", "password": "x"},
        "udp": {"listen": []},
        "rooms": {"service": "conference.localhost"},
        "eventstreams": {"url": "http://127.0.0.1:1/v2/stream/recentchange"},
    }
    assert parse_config(data).udp.listen == ()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "eventstreams.contact: required for stream.wikimedia.org"),
        ({"url": "ftp://x/y"}, "eventstreams.url: the http(s) URL"),
        ({"url": "http://h/s", "since": "yesterday"}, "eventstreams.since: an ISO 8601"),
        ({"url": "http://h/s", "since": "2026-01-02T03:04:05"}, "eventstreams.since:"),
        ({"url": "http://h/s", "wikis": ["en wiki"]}, "eventstreams.wikis: 'en wiki'"),
        ({"url": "http://h/s", "exclude_wikis": "dewiki"}, "eventstreams.exclude_wikis: a list"),
        ({"url": "http://h/s", "stall_seconds": 0}, "eventstreams.stall_seconds: must be at"),
        ({"url": "http://h/s", "backoff_max": 0.5}, "eventstreams.backoff_max: at least"),
        ({"url": "http://h/s", "state_file": "/nonexistent/x"}, "eventstreams.state_file: no"),
        ({"url": "http://h/s", "ca_file": "/nonexistent.pem"}, "eventstreams.ca_file: no such"),
        ({"url": "http://h/s", "contact": "a (b)"}, "eventstreams.contact: one line"),
        ({"url": "http://h/s", "streams": ["x"]}, "eventstreams.streams: unknown key"),
        ({"url": "http://h/s", "verify_tls": "no"}, "eventstreams.verify_tls: must be true"),
    ],
)
def test_bad_values_name_their_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(**values)
    assert str(error.value).startswith(message), str(error.value)


def test_the_example_bridge_toml_names_every_key_and_uncommented_is_valid() -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "bridge.toml").read_text()
    block = text.split("# [eventstreams]", 1)[1].split("\n\n", 1)[0]
    lines = ["[eventstreams]"] + [
        line.removeprefix("# ").split("  #", 1)[0]
        for line in block.splitlines()[1:]
        if "=" in line.split("#  ", 1)[0] and not line.startswith("#  ")
    ]
    given = {line.split("=")[0].strip() for line in lines[1:]}
    assert given == {f.name for f in fields(EventStreamsSettings)}
    values = tomllib.loads("\n".join(lines))["eventstreams"]
    del values["ca_file"], values["state_file"]  # paths on a production machine
    assert config(**values).eventstreams is not None


def test_since_takes_iso_or_milliseconds() -> None:
    assert config(url="http://h/s", since="2026-01-02T03:04:05Z").eventstreams.since == (
        "2026-01-02T03:04:05Z"
    )
    assert config(url="http://h/s", since=1767323045000).eventstreams.since == "1767323045000"


def test_the_effective_config_reads_back_the_same_section(tmp_path: Path) -> None:
    from udp2xmpp.effective import effective_toml

    given = config(
        url="http://127.0.0.1:1/v2/stream/recentchange,revision-create",
        since="2026-01-02T03:04:05Z",
        state_file=str(tmp_path / "state"),
        wikis=["enwiki", "*wiktionary"],
        exclude_wikis=["testwiki"],
        stall_seconds=30.0,
    )
    text = effective_toml(given)
    assert "[eventstreams]" in text
    again = parse_config(tomllib.loads(text.replace('"***"', '"x"')))
    assert again.eventstreams == given.eventstreams


async def test_an_event_over_max_event_bytes_is_skipped_and_the_stream_goes_on() -> None:
    big = dict(RECORDED[2], comment="x" * 10_000)
    srv = EventStreamsServer([RECORDED[0], big, RECORDED[1]])
    await srv.start()
    try:
        feed, got = await run_feed(srv, 2, max_event_bytes=4096)
        await wait_for(lambda: feed.skipped == 1, 5, "the big one skipped")
    finally:
        await srv.stop()
    assert got.changes == expected([RECORDED[0], RECORDED[1]])
    assert sum(feed.reconnects.values()) == 0 or set(feed.reconnects) == {"server_closed"}
    assert srv.connections == 1  # not reconnecting to read the same event again
