"""The XMPP layer against a real Prosody: session, MUC ownership, self-ping, archive."""

from __future__ import annotations

import pytest

from harness.prosody import ProsodyServer
from xmlrc.xmpp import Endpoint, JoinError, Session, SessionError, Verdict, muc, self_ping
from xmlrc.xmpp.archive import query_page


def endpoint(prosody: ProsodyServer, user: str, password: str) -> Endpoint:
    return Endpoint(
        prosody.jid(user), password, prosody.host, prosody.c2s_port, str(prosody.ca_file)
    )


async def test_session_refuses_a_wrong_password_clearly(prosody: ProsodyServer) -> None:
    session = Session(endpoint(prosody, "reader", "wrong"), connect_timeout=20)
    with pytest.raises(SessionError, match="refused the password"):
        await session.start(wait=True)
    assert session.state == "stopped"


async def test_join_reports_ownership_a_taken_nick_and_the_self_ping_verdicts(
    prosody: ProsodyServer,
) -> None:
    owner = Session(
        endpoint(prosody, "rcbot", "bridgepass"), plugins=("xep_0030", "xep_0059", "xep_0313")
    )
    other = Session(endpoint(prosody, "intruder", "intruderpass"))
    await owner.start(wait=True)
    await other.start(wait=True)
    room = f"layertest@{prosody.muc_domain}"
    try:
        mine = await muc.join(owner.client, room, "rcbot", timeout=20)
        assert mine.created and mine.owner and mine.role == "moderator"
        config = await muc.get_config(owner.client, room, timeout=20)
        assert "muc#roomconfig_moderatedroom" in config
        await muc.submit_config(
            owner.client,
            room,
            {"muc#roomconfig_moderatedroom": True},
            known=config,
            timeout=20,
        )
        info = await muc.room_info(other.client, room, timeout=20)
        assert info.moderated and not info.members_only

        with pytest.raises(JoinError) as taken:
            await muc.join(other.client, room, "rcbot", timeout=20)
        assert taken.value.nick_taken

        theirs = await muc.join(other.client, room, "visitor", timeout=20)
        assert not theirs.created and not theirs.owner and theirs.role == "visitor"

        joined = await self_ping(owner.client, f"{room}/rcbot", timeout=20)
        assert joined.verdict is Verdict.JOINED
        muc.leave(other.client, room, "visitor")
        gone = await self_ping(other.client, f"{room}/visitor", timeout=20)
        assert gone.verdict is Verdict.NOT_JOINED, gone
        assert gone.condition == "not-acceptable"

        page = await query_page(owner.client, room, timeout=20)
        assert page.complete and page.messages == []
    finally:
        await other.stop()
        await owner.stop()


async def test_a_session_tries_each_server_of_a_cluster_in_turn(prosody: ProsodyServer) -> None:
    """A dead first node: the session starts on the second; a drop moves it on, past
    the dead one (refused at once) and back, without the backoff pause in between."""
    import asyncio
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind((prosody.host, 0))
        dead = (prosody.host, probe.getsockname()[1])
    live = (prosody.host, prosody.c2s_port)
    session = Session(
        Endpoint(
            prosody.jid("reader"),
            "readerpass",
            *dead,
            str(prosody.ca_file),
            alternates=(dead, live),
        ),
        connect_timeout=20,
    )
    assert session.endpoint.addresses == (dead, live)
    await session.start(wait=True)
    try:
        assert session.current_address == live and session.connections == 1
        session.backoff.initial = session.backoff.maximum = 600.0  # a pause would show
        session.backoff.reset()
        session.drop("test: the node went away")
        for _ in range(400):
            if session.connections == 2:
                break
            await asyncio.sleep(0.05)
        assert session.connections == 2 and session.online
        assert session.current_address == live
    finally:
        await session.stop()
