"""The bridge's XMPP side against real Prosody: rooms it owns, faults it survives.

Delivery is checked in the room's archive (XEP-0313, SQL storage so it
survives a server restart): every change sent is there, whatever happened to
the connection meanwhile; duplicates are allowed (clients drop them by id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import slixmpp
from slixmpp.exceptions import IqError

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
from xmlrc_emitter import AsyncEmitter, RecentChange


def change(wiki: str, rcid: int) -> RecentChange:
    return RecentChange(
        wiki=wiki, type="edit", ns=0, title=f"Page {rcid}", user="Alice", comment="c",
        timestamp=datetime(2026, 11, 21, tzinfo=UTC), rcid=rcid, revid=rcid, old_revid=rcid - 1,
        oldlen=10, newlen=12,
    )  # fmt: skip


async def stream(bridge: Bridge, wiki: str, rcids: range, per_second: float) -> None:
    """Send changes over UDP at a steady rate (bounded by the range)."""
    emitter = AsyncEmitter(*bridge.addresses[0])
    try:
        for rcid in rcids:
            await emitter.send(change(wiki, rcid))
            await asyncio.sleep(1 / per_second)
    finally:
        emitter.close()


async def raw_client(prosody: ProsodyServer, user: str, password: str) -> slixmpp.ClientXMPP:
    client = slixmpp.ClientXMPP(prosody.jid(user), password)
    client.register_plugin("xep_0045")
    client.register_plugin("xep_0030")
    client.enable_direct_tls = False
    client.ca_certs = prosody.ca_file
    started = asyncio.Event()
    client.add_event_handler("session_start", lambda _: started.set())
    client.connect(prosody.host, prosody.c2s_port)
    await asyncio.wait_for(started.wait(), 20)
    return client


async def test_rooms_are_configured_and_nobody_else_can_speak(prosody: ProsodyServer) -> None:
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": ["quietwiki"]}))
    room = f"quietwiki@{prosody.muc_domain}"
    intruder = await raw_client(prosody, "intruder", "intruderpass")
    errors: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
    intruder.add_event_handler("groupchat_message_error", errors.put_nowait)
    intruder.add_event_handler("message_error", errors.put_nowait)
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        info = await intruder.plugin["xep_0030"].get_info(jid=room, timeout=20)
        features = set(info["disco_info"]["features"])
        assert {"muc_persistent", "muc_moderated", "urn:xmpp:mam:2"} <= features
        assert "muc_open" in features

        async with reader(prosody, [room]) as client:
            muc = intruder.plugin["xep_0045"]
            await muc.join_muc_wait(slixmpp.JID(room), "intruder", maxstanzas=0, timeout=20)
            spoof = intruder.make_message(mto=room, mtype="groupchat", mbody="fake")
            spoof.xml.append(
                spoof.xml.makeelement(
                    "{urn:xmlrc:rc:1}rc",
                    {
                        "wikiid": "quietwiki",
                        "type": "edit",
                        "ns": "0",
                        "title": "Spoof",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "rcid": "666",
                    },
                )
            )
            spoof.send()
            refused = await asyncio.wait_for(errors.get(), 20)
            assert refused["error"]["condition"] == "forbidden"
            await stream(bridge, "quietwiki", range(1, 4), per_second=50)
            got = await collect(client, 3)
        assert [d.change.rcid for d in got] == [1, 2, 3]  # and not the spoof
    finally:
        intruder.disconnect()
        await bridge.stop()


async def test_prosody_killed_and_restarted_mid_stream_loses_nothing(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    server = prosody_factory(muc_log_storage="sql")
    bridge = await running_bridge(bridge_config(server, rooms={"wikis": ["killwiki"]}))
    room = f"killwiki@{server.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        sender = asyncio.create_task(stream(bridge, "killwiki", range(1, 301), per_second=100))
        await wait_for(lambda: bridge.sink.stats.published >= 100, what="100 published")
        server.kill()  # SIGKILL: no goodbye, nothing flushed
        await asyncio.sleep(1.0)
        server.start()
        await sender
        await wait_for(lambda: bridge.sink.pending == 0, 60, "the backlog to be confirmed")
    finally:
        await bridge.stop()
    ids = await archived_stable_ids(server, room)
    assert set(ids) == {f"killwiki/{n}" for n in range(1, 301)}
    assert bridge.sink.stats.connections == 2


async def test_frozen_server_is_noticed_and_nothing_is_lost(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    server = prosody_factory(muc_log_storage="sql")
    config = bridge_config(
        server, rooms={"wikis": ["frozenwiki"]}, xmpp={"ping_timeout": 2, "self_ping_interval": 1}
    )
    bridge = await running_bridge(config)
    room = f"frozenwiki@{server.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        await stream(bridge, "frozenwiki", range(1, 21), per_second=100)
        server.freeze()  # SIGSTOP: the TCP connection stays up, nobody answers
        await stream(bridge, "frozenwiki", range(21, 41), per_second=100)
        await wait_for(lambda: not bridge.sink.online, 30, "the bridge to notice")
        server.thaw()
        await wait_for(lambda: bridge.sink.pending == 0, 60, "the backlog to be confirmed")
    finally:
        server.thaw()
        await bridge.stop()
    ids = await archived_stable_ids(server, room)
    assert set(ids) == {f"frozenwiki/{n}" for n in range(1, 41)}
    assert bridge.sink.stats.self_ping_failures >= 1


async def test_queue_bound_while_server_is_away(fresh_prosody: ProsodyServer) -> None:
    server = fresh_prosody
    config = bridge_config(server, rooms={"wikis": ["awaywiki"]}, delivery={"queue_size": 50})
    bridge = await running_bridge(config)
    room = f"awaywiki@{server.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        server.stop()
        await wait_for(lambda: not bridge.sink.online, 20, "the disconnect")
        await stream(bridge, "awaywiki", range(1, 81), per_second=500)
        await wait_for(lambda: bridge.stats.accepted == 80, 20, "intake")
        assert bridge.sink.queue_depths() == {room: 50}
        assert bridge.sink.stats.dropped_overflow == 30
        server.start()
        async with reader(server, [room]) as client:
            # The room is persistent; the bridge rejoins and sends the 50 newest, in order.
            got = await collect(client, 50, timeout=60)
    finally:
        await bridge.stop()
    assert [d.change.rcid for d in got] == list(range(31, 81))


async def test_component_mode_publishes_through_xep_0114(prosody: ProsodyServer) -> None:
    config = bridge_config(
        prosody,
        xmpp={"mode": "component", "jid": prosody.component_domain,
              "password": prosody.component_secret, "port": prosody.component_port},
        rooms={"wikis": ["compwiki"]},
    )  # fmt: skip
    bridge = await running_bridge(config)
    room = f"compwiki@{prosody.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            await stream(bridge, "compwiki", range(1, 51), per_second=500)
            got = await collect(client, 50)
        await wait_for(lambda: bridge.sink.pending == 0, 20, "confirmation")
    finally:
        await bridge.stop()
    assert [d.change.rcid for d in got] == list(range(1, 51))
    assert bridge.sink.stats.confirmed == 50


async def test_tls_is_verified_an_unknown_ca_never_gets_online(
    prosody: ProsodyServer, tmp_path: object
) -> None:
    other = ProsodyServer()  # its certificate comes from another CA
    try:
        config = bridge_config(prosody, xmpp={"ca_file": str(other.ca_file)})
        bridge = Bridge(config)
        await bridge.start()
        try:
            await asyncio.sleep(3)
            assert not bridge.sink.online
            assert bridge.sink.stats.connections == 0
        finally:
            await bridge.stop()
    finally:
        other.cleanup()


async def test_self_ping_answer_is_what_confirms(prosody: ProsodyServer) -> None:
    """The room answers our self-ping; an outsider's ping of our nick is refused."""
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": ["pingwiki"]}))
    room = f"pingwiki@{prosody.muc_domain}"
    outsider = await raw_client(prosody, "intruder", "intruderpass")
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        await stream(bridge, "pingwiki", range(1, 11), per_second=200)
        await wait_for(lambda: bridge.sink.stats.confirmed == 10, 20, "confirmation")
        iq = outsider.make_iq_get(ito=slixmpp.JID(f"{room}/rcbot"))
        iq.enable("ping")
        with pytest.raises(IqError) as refused:
            await iq.send(timeout=20)
        assert refused.value.iq["error"]["condition"] in {"not-acceptable", "not-allowed"}
    finally:
        outsider.disconnect()
        await bridge.stop()


async def test_room_destroyed_under_the_bridge_is_rejoined(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    """An admin destroys the room: the bridge notices, recreates it, keeps publishing."""
    server = prosody_factory(
        extra_global='admins = { "intruder@localhost" }',
        extra_muc="muc_tombstones = false",  # else Prosody answers "gone" for a month
    )
    bridge = await running_bridge(bridge_config(server, rooms={"wikis": ["doomwiki"]}))
    room = f"doomwiki@{server.muc_domain}"
    admin = await raw_client(server, "intruder", "intruderpass")
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        await admin.plugin["xep_0045"].destroy(room, reason="test", timeout=20)
        await wait_for(lambda: bridge.sink.stats.joins >= 2, 30, "the rejoin")
        await wait_for(lambda: room in bridge.sink.joined_rooms(), 30, "the room again")
        async with reader(server, [room]) as client:
            await stream(bridge, "doomwiki", range(1, 11), per_second=200)
            got = await collect(client, 10)
    finally:
        admin.disconnect()
        await bridge.stop()
    assert [d.change.rcid for d in got] == list(range(1, 11))


async def test_stream_management_counts_the_fast_path(
    prosody: ProsodyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """XEP-0198 stays consistent although messages bypass slixmpp's stanza objects."""
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": ["smwiki"]}))
    room = f"smwiki@{prosody.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        sm = bridge.session.client.plugin["xep_0198"]
        assert sm.enabled_out and sm.enabled_in
        await stream(bridge, "smwiki", range(1, 301), per_second=1000)
        await wait_for(lambda: bridge.sink.stats.confirmed == 300, 30, "confirmation")
        sm.request_ack()
        await wait_for(lambda: not sm.unacked_queue, 20, "the server's acks")
        assert sm.last_ack == sm.seq  # the server counted exactly what we counted
    finally:
        await bridge.stop()
    assert "Inconsistent sequence numbers" not in caplog.text


async def test_restart_without_loss_new_bridge_first_then_the_old_one_stops(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    """SO_REUSEPORT: the new bridge binds the same UDP port while the old one still
    runs; the old one then drains and leaves. A steady stream loses nothing."""
    import socket

    server = prosody_factory(muc_log_storage="sql")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = bridge_config(server, rooms={"wikis": ["handwiki"]},
                           udp={"listen": f"127.0.0.1:{port}"})  # fmt: skip
    room = f"handwiki@{server.muc_domain}"
    old = await running_bridge(config)
    new: Bridge | None = None
    try:
        await wait_for(lambda: room in old.sink.joined_rooms(), what="the room")
        sender = asyncio.create_task(stream(old, "handwiki", range(1, 401), per_second=200))
        await asyncio.sleep(0.5)
        new = await running_bridge(config)
        await wait_for(lambda: room in new.sink.joined_rooms(), what="the new bridge")
        await old.stop()  # stops intake, drains, leaves
        await sender
        await wait_for(lambda: new.sink.pending == 0, 30, "the new bridge's backlog")
    finally:
        if new is not None:
            await new.stop()
        await old.stop()
    ids = await archived_stable_ids(server, room)
    missing = {f"handwiki/{n}" for n in range(1, 401)} - set(ids)
    assert not missing, (missing, old.stats, old.sink.stats, new.stats, new.sink.stats)
    assert old.stats.accepted > 0 and new.stats.accepted > 0
    assert old.stats.accepted + new.stats.accepted == 400


async def test_several_changes_per_stanza_still_reach_clients_one_by_one(
    prosody: ProsodyServer,
) -> None:
    """The opt-in for busy rooms: a backlog goes out several changes per message,
    each with its own <rc>; rcclient yields them as separate events, in order."""
    config = bridge_config(
        prosody, rooms={"wikis": ["batchwiki"]}, delivery={"changes_per_stanza": 10}
    )
    bridge = await running_bridge(config)
    room = f"batchwiki@{prosody.muc_domain}"
    plain = await raw_client(prosody, "intruder", "intruderpass")
    payloads_per_message: list[int] = []
    plain.add_event_handler(
        "groupchat_message",
        lambda msg: payloads_per_message.append(len(list(msg.xml.iter("{urn:xmlrc:rc:1}rc")))),
    )
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        await plain.plugin["xep_0045"].join_muc_wait(slixmpp.JID(room), "plain", maxstanzas=0)
        async with reader(prosody, [room]) as client:
            bridge.session.client.abort()  # while it reconnects, a backlog builds up
            await wait_for(lambda: not bridge.sink.online, 20, "the disconnect")
            await stream(bridge, "batchwiki", range(1, 301), per_second=2000)
            got = await collect(client, 300, timeout=60)
    finally:
        plain.disconnect()
        await bridge.stop()
    assert [d.change.rcid for d in got] == list(range(1, 301))
    assert sum(payloads_per_message) == 300
    assert max(payloads_per_message) == 10
    assert len(payloads_per_message) < 300
