"""The bridge publishes only in rooms it owns, configured as it requires (real Prosody).

A local account that creates a room before the bridge (a squatter) used to
keep it: unmoderated (anyone posts forged changes), moderated (every change
refused and lost), members-only-less (a private wiki's changes public), or
holding the bridge's nick (the bridge retried the join forever). Now each is
refused loudly, and the shipped server config lets only the bridge create rooms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.prosody import ProsodyServer
from tests.helpers import archived_messages, bridge_config, reader, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from udp2xmpp.config import parse_config
from xmlrc.wire import RecentChange
from xmlrc.xmpp import Endpoint, JoinError, Session, muc
from xmlrc_emitter import Emitter

from .test_sink_memory import item

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def account(prosody: ProsodyServer, user: str, password: str) -> AsyncIterator[Session]:
    session = Session(
        Endpoint(prosody.jid(user), password, prosody.host, prosody.c2s_port, str(prosody.ca_file))
    )
    await session.start(wait=True)
    try:
        yield session
    finally:
        await session.stop()


async def squat(
    squatter: Session, room: str, *, nick: str = "squatter", moderated: bool = False
) -> None:
    """Create `room` first, as another local account, and configure it its way."""
    occupancy = await muc.join(squatter.client, room, nick, timeout=20)
    assert occupancy.created and occupancy.owner
    fields = await muc.get_config(squatter.client, room, timeout=20)
    await muc.submit_config(
        squatter.client,
        room,
        {"muc#roomconfig_moderatedroom": moderated, "muc#roomconfig_persistentroom": True},
        known=fields,
        timeout=20,
    )


def send(bridge: Bridge, *changes: RecentChange) -> None:
    host, port = bridge.addresses[0]
    with Emitter(host, port) as emitter:
        for change in changes:
            emitter.send(change)


async def healthz(bridge: Bridge) -> tuple[int, dict[str, Any]]:
    assert bridge.http_address is not None
    host, port = bridge.http_address
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{host}:{port}/healthz") as response,
    ):
        return response.status, json.loads(await response.text())


def bridge_messages(messages: list[Any], nick: str = "rcbot") -> list[Any]:
    return [m for m in messages if str(m["from"]).endswith(f"/{nick}")]


@pytest.mark.parametrize("moderated", [False, True], ids=["unmoderated", "moderated"])
async def test_a_squatted_room_of_an_unknown_wiki_is_refused_loudly(
    prosody: ProsodyServer, moderated: bool
) -> None:
    wiki = f"squat{'mod' if moderated else 'open'}wiki"
    room = f"{wiki}@{prosody.muc_domain}"
    async with account(prosody, "intruder", "intruderpass") as squatter:
        await squat(squatter, room, moderated=moderated)
        config = bridge_config(prosody, http={"listen": "127.0.0.1:0"}, rooms={"wikis": ["okwiki"]})
        bridge = await running_bridge(config)
        try:
            ok_room = f"okwiki@{prosody.muc_domain}"
            await wait_for(lambda: ok_room in bridge.sink.joined_rooms(), what="the good room")
            async with reader(prosody, [ok_room]) as client:
                send(bridge, item(1, wiki=wiki).change, item(2, wiki="okwiki").change)
                await wait_for(lambda: bridge.sink.refused_rooms() != {}, what="the refusal")
                assert bridge.sink.refused_rooms() == {room: "not_owner"}
                got = [d async for d in _first(client, 1)]
                assert [d.change.stable_id for d in got] == ["okwiki/2"]
            status, body = await healthz(bridge)
            assert status == 503 and body["status"] == "degraded"
            assert body["refused_rooms"] == {room: "not_owner"}
            send(bridge, item(3, wiki=wiki).change)
            await wait_for(lambda: bridge.sink.stats.dropped_room_not_ours >= 2, what="drops")
            assert not bridge.failed.is_set()  # an unknown wiki's room: the rest goes on
        finally:
            await bridge.stop()
        assert bridge_messages(await archived_messages(prosody, room)) == []


async def _first(client: Any, count: int) -> AsyncIterator[Any]:
    seen = 0
    async for delivery in client.deliveries():
        yield delivery
        seen += 1
        if seen >= count:
            return


async def test_a_squatted_room_of_a_configured_private_wiki_stops_the_bridge(
    prosody: ProsodyServer,
) -> None:
    room = f"office@{prosody.muc_domain}"
    async with account(prosody, "intruder", "intruderpass") as squatter:
        await squat(squatter, room)
        data = {
            "officewiki": {
                "room": "office",
                "members_only": True,
                "members": [prosody.jid("reader")],
            }
        }
        raw = {
            "xmpp": {
                "jid": prosody.jid("rcbot"),
                "password": "bridgepass",
                "host": prosody.host,
                "port": prosody.c2s_port,
                "ca_file": str(prosody.ca_file),
            },
            "udp": {"listen": "127.0.0.1:0"},
            "rooms": {"service": prosody.muc_domain, "nick": "rcbot"},
            "wikis": data,
        }
        config = parse_config(raw, base_dir=ROOT)
        bridge = await running_bridge(config)
        try:
            await wait_for(bridge.failed.is_set, what="the bridge giving up")
            assert bridge.failure is not None and "office@" in bridge.failure
            assert "refusing to run" in bridge.failure
            send(bridge, item(1, wiki="officewiki").change)
            await wait_for(lambda: bridge.sink.stats.dropped_room_not_ours >= 1, what="the drop")
        finally:
            await bridge.stop()
        assert bridge_messages(await archived_messages(prosody, room)) == []


async def test_an_occupant_holding_the_bridges_nick_is_an_alarm_not_a_retry_loop(
    prosody: ProsodyServer,
) -> None:
    room = f"nickwiki@{prosody.muc_domain}"
    async with account(prosody, "intruder", "intruderpass") as squatter:
        await squat(squatter, room, nick="rcbot")  # in the room as the bridge's nick
        bridge = await running_bridge(bridge_config(prosody))
        try:
            send(bridge, item(1, wiki="nickwiki").change)
            await wait_for(lambda: bridge.sink.refused_rooms() != {}, what="the refusal")
            assert bridge.sink.refused_rooms() == {room: "nick_taken"}
            assert bridge.sink.stats.nick_conflicts == 1
            joins = bridge.sink.stats.join_failures
            await asyncio.sleep(1.0)
            assert bridge.sink.stats.join_failures == joins  # no retrying forever
        finally:
            await bridge.stop()


async def test_the_shipped_server_config_lets_only_the_bridge_create_rooms(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    """What examples/prosody.cfg.lua says, on a real server: another local account
    cannot create a room on the MUC service; the bridge can, and publishes."""
    example = (ROOT / "examples" / "prosody.cfg.lua").read_text()
    assert "restrict_room_creation = true" in example
    assert 'admins = { "rcbot@example.org" }' in example
    prosody = prosody_factory(
        extra_muc='  restrict_room_creation = true\n  admins = { "rcbot@localhost" }\n'
    )
    room = f"lockedwiki@{prosody.muc_domain}"
    async with account(prosody, "intruder", "intruderpass") as squatter:
        with pytest.raises(JoinError) as refused:
            await muc.join(squatter.client, room, "squatter", timeout=20)
        assert refused.value.condition == "not-allowed"
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": ["lockedwiki"]}))
    try:
        async with reader(prosody, [room]) as client:
            send(bridge, item(1, wiki="lockedwiki").change)
            got = [d async for d in _first(client, 1)]
            assert [d.change.stable_id for d in got] == ["lockedwiki/1"]
        assert bridge.sink.refused_rooms() == {}
    finally:
        await bridge.stop()
