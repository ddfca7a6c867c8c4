"""Room ownership on ejabberd 23 (Debian): the shipped config lets only the bridge create
rooms, and without it a squatted room is refused, as on Prosody."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from harness.ejabberd import EjabberdServer
from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from xmlrc.xmpp import JoinError, muc

from .test_room_ownership import account, send, squat
from .test_sink_memory import item

ROOT = Path(__file__).resolve().parents[2]


def ejabberd(**options: Any) -> Iterator[ProsodyServer]:
    server = EjabberdServer(**options)
    try:
        server.start()
        for user, password in (("rcbot", "bridgepass"), ("reader", "readerpass")):
            server.add_user(user, password)
        server.add_user("intruder", "intruderpass")
        # The test helpers are typed for Prosody; they use only what both servers have.
        yield cast(ProsodyServer, server)
    finally:
        server.cleanup()


@pytest.fixture
def locked_ejabberd() -> Iterator[ProsodyServer]:
    yield from ejabberd(room_creators=("rcbot@localhost",))


@pytest.fixture
def open_ejabberd() -> Iterator[ProsodyServer]:
    yield from ejabberd()


async def test_the_shipped_ejabberd_config_lets_only_the_bridge_create_rooms(
    locked_ejabberd: ProsodyServer,
) -> None:
    example = (ROOT / "examples" / "ejabberd.yml").read_text()
    assert "access_create: muc_create" in example and "allow: xmlrc_bridge" in example
    server = locked_ejabberd
    room = f"lockedwiki@{server.muc_domain}"
    async with account(server, "intruder", "intruderpass") as squatter:
        with pytest.raises(JoinError) as refused:
            await muc.join(squatter.client, room, "squatter", timeout=20)
        assert refused.value.condition in ("not-allowed", "forbidden")
    bridge = await running_bridge(bridge_config(server, rooms={"wikis": ["lockedwiki"]}))
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(server, [room]) as client:
            send(bridge, item(1, wiki="lockedwiki").change)
            got = await collect(client, 1)
        assert [d.change.stable_id for d in got] == ["lockedwiki/1"]
        assert bridge.sink.refused_rooms() == {}
    finally:
        await bridge.stop()


async def test_a_squatted_room_on_ejabberd_is_refused(open_ejabberd: ProsodyServer) -> None:
    server = open_ejabberd
    room = f"squatwiki@{server.muc_domain}"
    async with account(server, "intruder", "intruderpass") as squatter:
        await squat(squatter, room)
        bridge = await running_bridge(bridge_config(server))
        try:
            send(bridge, item(1, wiki="squatwiki").change)
            await wait_for(lambda: bridge.sink.refused_rooms() != {}, what="the refusal")
            assert bridge.sink.refused_rooms() == {room: "not_owner"}
        finally:
            await bridge.stop()


async def test_on_ejabberd_a_newcomer_gets_no_voice_in_the_bridges_room(
    open_ejabberd: ProsodyServer,
) -> None:
    """ejabberd gives every newcomer voice by default (members_by_default), moderated
    or not: the bridge turns it off in its rooms, so an ordinary account cannot post."""
    server = open_ejabberd
    room = f"voicewiki@{server.muc_domain}"
    bridge = await running_bridge(bridge_config(server, rooms={"wikis": ["voicewiki"]}))
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with account(server, "intruder", "intruderpass") as intruder:
            occupancy = await muc.join(intruder.client, room, "visitor", timeout=20)
            assert occupancy.role == "visitor"
    finally:
        await bridge.stop()
