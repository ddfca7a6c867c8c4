"""Browser readers on ejabberd 23 (Debian), as examples/ejabberd.yml sets it up: an
anonymous session over WebSocket (/ws) reads a public room the bridge owns, and can
do nothing more there (harness web=True, anonymous_host=True, the bridge alone
creating rooms)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from harness.ejabberd import EjabberdServer
from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, running_bridge, wait_for
from tests.udp2xmpp.test_room_ownership import send
from tests.udp2xmpp.test_sink_memory import item

from .test_prosody_anonymous import is_live_groupchat, pings
from .wsxmpp import CLIENT, MUC_USER, error_condition, q, websocket

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "ejabberd.yml").read_text()


@pytest.fixture
def server() -> Iterator[EjabberdServer]:
    for line in (
        "auth_method: anonymous",
        "anonymous_protocol: sasl_anon",
        "/ws: ejabberd_http_ws",
        "/bosh: mod_bosh",
        "access_create: muc_create",
        "anonymous_reader: anonymous_readers",
        "max_fsm_queue: 1000",
        "members_by_default: false",
    ):
        assert line in EXAMPLE, line
    server = EjabberdServer(web=True, anonymous_host=True, room_creators=("rcbot@localhost",))
    try:
        server.start()
        for user, password in (("rcbot", "bridgepass"), ("reader", "readerpass")):
            server.add_user(user, password)
        yield server
    finally:
        server.cleanup()


async def test_an_anonymous_websocket_session_reads_a_public_room_and_nothing_more(
    server: EjabberdServer,
) -> None:
    public, office = server.room_jid("openwiki"), server.room_jid("office")
    # The test helpers are typed for Prosody; they use only what both servers have.
    config = bridge_config(
        cast(ProsodyServer, server),
        rooms={"wikis": ["openwiki"]},
        wikis={
            "officewiki": {"room": "office", "members_only": True, "members": ["reader@localhost"]}
        },
    )
    bridge = await running_bridge(config)
    try:
        await wait_for(
            lambda: {public, office} <= set(bridge.sink.joined_rooms()), what="the bridge's rooms"
        )
        async with websocket(server.websocket_url, server.anonymous_domain) as browser:
            jid = await browser.login()
            assert jid.split("/")[0].endswith(f"@{server.anonymous_domain}")

            joined = await browser.join(public, "visitor")
            assert joined.get("type") is None, ET.tostring(joined)
            send(bridge, item(1, wiki="openwiki").change)
            change = await browser.until(is_live_groupchat(f"{public}/rcbot"))
            assert "Page 1" in ET.tostring(change, encoding="unicode")

            await browser.send(
                f'<message xmlns="{CLIENT}" to="{public}" type="groupchat" id="forged">'
                "<body>a forged change</body></message>"
            )
            refused = await browser.until(
                lambda e: e.tag == q(CLIENT, "message") and e.get("id") == "forged"
            )
            assert refused.get("type") == "error" and error_condition(refused) == "forbidden"

            closed = await browser.join(office, "visitor")
            assert closed.get("type") == "error"
            assert error_condition(closed) == "registration-required"

            created = await browser.join(server.room_jid("squatted"), "squatter")
            assert created.get("type") == "error" and error_condition(created) == "forbidden"

            register = await browser.iq(
                "set",
                '<query xmlns="jabber:iq:register"><username>taken</username>'
                "<password>x</password></query>",
                to=server.anonymous_domain,
            )
            assert register.get("type") == "error", ET.tostring(register)
    finally:
        await bridge.stop()


async def test_bosh_is_served_on_the_same_listener(server: EjabberdServer) -> None:
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            server.bosh_url,
            data=(
                "<body xmlns='http://jabber.org/protocol/httpbind' rid='1' "
                f"to='{server.anonymous_domain}' wait='5' hold='1' ver='1.6' "
                "xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'/>"
            ),
            headers={"Content-Type": "text/xml; charset=utf-8"},
        ) as response,
    ):
        assert response.status == 200
        text = await response.text()
    assert "sid=" in text and "<mechanism>ANONYMOUS</mechanism>" in text


async def test_even_with_ejabberds_default_no_account_speaks_in_the_bridges_room() -> None:
    """ejabberd's default (members_by_default true) gives every newcomer voice, moderated
    or not: a local account posted forged changes in the bridge's room. The bridge now
    turns it off in its rooms (examples/ejabberd.yml does so service-wide too)."""
    server = EjabberdServer(web=True, room_creators=("rcbot@localhost",))
    try:
        server.start()
        for user, password in (("rcbot", "bridgepass"), ("reader", "readerpass")):
            server.add_user(user, password)
        room = server.room_jid("openwiki")
        bridge = await running_bridge(
            bridge_config(cast(ProsodyServer, server), rooms={"wikis": ["openwiki"]})
        )
        try:
            await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the bridge's room")
            assert bridge.sink.refused_rooms() == {}
            async with websocket(server.websocket_url, server.domain) as account:
                await account.login("PLAIN", "reader", "readerpass")
                joined = await account.join(room, "forger")
                roles = [i.get("role") for i in joined.iter(q(MUC_USER, "item"))]
                assert roles == ["visitor"]
                await account.send(
                    f'<message xmlns="{CLIENT}" to="{room}" type="groupchat" id="forged">'
                    "<body>a forged change</body></message>"
                )
                echo = await account.until(
                    lambda e: e.tag == q(CLIENT, "message") and e.get("id") == "forged"
                )
                assert echo.get("type") == "error"  # refused: no voice
        finally:
            await bridge.stop()
    finally:
        server.cleanup()


async def test_anonymous_sessions_are_shaped_the_bridge_is_not(server: EjabberdServer) -> None:
    """c2s_shaper as the example sets it (anonymous readers 1,000 B/s, the bridge
    none): 6 kB of pings over WebSocket from an anonymous session and from the
    bridge's account, sent together. The bridge's are all answered while most of
    the anonymous session's are held back; then those are answered too."""
    count = 6  # ~6.2 kB: six times the shaper's rate
    async with (
        websocket(server.websocket_url, server.anonymous_domain) as anonymous,
        websocket(server.websocket_url, server.domain) as bridge,
    ):
        await anonymous.login()
        await bridge.login("PLAIN", "rcbot", "bridgepass")
        slow: list[str] = []
        fast: list[str] = []
        slow_task = asyncio.create_task(pings(anonymous, count, slow))
        try:
            await pings(bridge, count, fast)
            assert fast == ["result"] * count
            held_back = count - len(slow)
            assert held_back >= count // 2, f"only {held_back} of {count} held back"
            await asyncio.wait_for(slow_task, 60)
        finally:
            slow_task.cancel()
            await asyncio.gather(slow_task, return_exceptions=True)
        assert slow == ["result"] * count
