"""EventStreams into real rooms (real Prosody, RCClient reader): a stall, forced closes,
a 429 and a bridge restart in the middle of the stream, and still every recorded event
reaches its wiki's room exactly once, in order per wiki; canaries never do."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from harness.eventstreams import EventStreamsServer, load_jsonl
from harness.prosody import ProsodyServer
from tests.helpers import (
    archived_stable_ids,
    bridge_config,
    collect,
    reader,
    running_bridge,
    wait_for,
)
from udp2xmpp.bridge import Bridge
from udp2xmpp.source.eventstreams import EventStreamsFeed
from xmlrc.wire.jsonfeed import change_from_json

DATA = Path(__file__).resolve().parent.parent / "data" / "eventstreams"
RECORDED = load_jsonl(str(DATA / "recentchange.jsonl"))


def feed_of(bridge: Bridge) -> EventStreamsFeed:
    feed = bridge.feeds[0]
    assert isinstance(feed, EventStreamsFeed)
    return feed


async def test_faults_and_a_restart_deliver_every_event_once_in_order_per_wiki(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wikis = sorted({e["wiki"] for e in RECORDED})
    rooms = {wiki: prosody.room_jid(f"es1-{wiki}") for wiki in wikis}
    server = EventStreamsServer(close_after_events=6, canary_every=7, interval=0.02)
    await server.start()
    config = bridge_config(
        prosody,
        rooms={"room": "es1-{wiki}", "wikis": wikis},
        eventstreams={
            "url": server.url(),
            "since": "0",
            "state_file": str(tmp_path / "eventstreams.state"),
            "state_interval": 0.1,
            "stall_seconds": 0.5,
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
        },
    )
    server.stall_next(after_events=3)  # the first connection goes silent after 3
    bridge = await running_bridge(config)
    try:
        async with reader(prosody, list(rooms.values())) as client:
            reading = asyncio.create_task(collect(client, len(RECORDED), timeout=90, quiet=1.0))
            server.publish(RECORDED)
            first = feed_of(bridge)
            await wait_for(lambda: sum(first.events.values()) >= 20, 30, "20 events in")
            await bridge.stop()  # mid-stream: the server still has 30 to send
            assert first.reconnects["stall"] == 1
            assert first.reconnects["server_closed"] >= 2
            server.refuse_next(429, Retry_After="1")
            bridge = await running_bridge(config)
            second = feed_of(bridge)
            deliveries = await reading
            assert second.reconnects["http_429"] == 1
            assert second.history[0] == ("http_429", 1.0)  # waited what it was told
    finally:
        await bridge.stop()
        await server.stop()
    assert sum(first.events.values()) + sum(second.events.values()) == len(RECORDED)
    assert first.canaries + second.canaries >= 7
    restart = [r for r in server.requests if r["last_event_id"] == first.position]
    assert restart, "the restarted bridge resumed from the saved position"
    got: dict[str, list[str]] = defaultdict(list)
    for delivery in deliveries:
        got[delivery.room].append(delivery.change.stable_id)
    want: dict[str, list[str]] = defaultdict(list)
    for event in RECORDED:
        want[rooms[event["wiki"]]].append(change_from_json(event).stable_id)
    assert dict(got) == dict(want)  # each once, in order, in its own wiki's room
    for wiki, room in rooms.items():  # and the rooms' archives hold no duplicate
        assert await archived_stable_ids(prosody, room) == want[room], wiki
