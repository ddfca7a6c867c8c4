"""No flood of datagrams, and no pathological one, can stop the bridge (real Prosody).

A few thousand distinct wiki IDs from one allowed source in a second (within
its rate limit) used to create that many rooms at once: joins and pings timed
out, the bridge reconnected in a loop and delivered nothing. Now rooms for
unknown wikis are capped, room entries and pings are bounded in flight, the
warnings are rate-limited, and a legitimate change still gets through. Log
parameters nested deeper than the limit are refused at decode, not accepted
and then lost with the changes batched beside them.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from xmlrc_emitter import Emitter


def send(bridge: Bridge, *datagrams: bytes) -> None:
    host, port = bridge.addresses[0]
    with Emitter(host, port) as emitter:
        for datagram in datagrams:
            emitter.send_raw(datagram)


def xmlrc(wiki: str, rcid: int) -> bytes:
    return (
        f'<rc wikiid="{wiki}" type="edit" ns="0" title="Page {rcid}" rcid="{rcid}" '
        f'user="Mallory" timestamp="2026-01-01T00:00:00Z"/>'
    ).encode()


async def test_thousands_of_new_wiki_ids_in_a_burst_leave_the_real_wiki_flowing(
    fresh_prosody: ProsodyServer, caplog: pytest.LogCaptureFixture
) -> None:
    prosody = fresh_prosody
    cap = 150
    config = bridge_config(prosody, rooms={"wikis": ["realwiki"], "max_unknown_rooms": cap})
    bridge = await running_bridge(config)
    room = f"realwiki@{prosody.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the real room")
        async with reader(prosody, [room]) as client:
            caplog.set_level(logging.WARNING)
            tasks_before = len(asyncio.all_tasks())
            send(bridge, *(xmlrc(f"junk{n}wiki", n) for n in range(3000)))
            send(bridge, _real(1))
            got = await collect(client, 1, timeout=60)
            assert [d.change.stable_id for d in got] == ["realwiki/1"]
        await wait_for(lambda: bridge.stats.received >= 3001, 30, "every datagram read")
        assert bridge.stats.rejected["too_many_rooms"] == 3000 - cap
        assert bridge.sink.dynamic_rooms == cap
        # Every junk room is entered in the end, paced: the stream never broke.
        await wait_for(lambda: len(bridge.sink.joined_rooms()) == cap + 1, 120, "the junk rooms")
        assert bridge.sink.stats.connections == 1
        # Two tasks a room, plus slixmpp's own for IQs in flight: bounded by the caps.
        assert len(asyncio.all_tasks()) <= tasks_before + 3 * cap + 20
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) <= 30  # rate-limited, not one line per refused change
    finally:
        await bridge.stop()


def _real(rcid: int) -> bytes:
    return xmlrc("realwiki", rcid)


def log_json(wiki: str, rcid: int, depth: int) -> bytes:
    nested: object = "leaf"
    for _ in range(depth):
        nested = {"k": nested}
    return json.dumps(
        {
            "id": rcid,
            "type": "log",
            "namespace": 2,
            "title": "User:Alice",
            "comment": "",
            "timestamp": 1_700_000_000,
            "user": "Alice",
            "bot": False,
            "log_id": rcid,
            "log_type": "newusers",
            "log_action": "create",
            "log_params": nested,
            "log_action_comment": "",
            "wiki": wiki,
        }
    ).encode()


async def test_log_parameters_too_deep_are_refused_and_lose_nothing_beside_them(
    prosody: ProsodyServer,
) -> None:
    room = f"deepwiki@{prosody.muc_domain}"
    config = bridge_config(
        prosody, rooms={"wikis": ["deepwiki"]}, delivery={"changes_per_stanza": 10}
    )
    bridge = await running_bridge(config)
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            bridge.session.client.abort()  # queue them up so they would share messages
            send(
                bridge,
                log_json("deepwiki", 1, 3),
                log_json("deepwiki", 2, 500),  # json parses it; re-encoding it would not
                log_json("deepwiki", 3, 15),
                log_json("deepwiki", 4, 3),
            )
            got = await collect(client, 3, timeout=60)
        assert sorted(d.change.rcid for d in got) == [1, 3, 4]
        assert bridge.stats.rejected["bad_field"] == 1
        await wait_for(lambda: bridge.sink.pending == 0, 20, "confirmation")
        assert bridge.sink.stats.confirmed == 3 and bridge.sink.stats.published == 3
    finally:
        await bridge.stop()  # never raises
