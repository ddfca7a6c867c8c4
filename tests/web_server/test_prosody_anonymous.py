"""Browser readers on the shipped Prosody config (issue 14), on a real Prosody.

The anonymous host, its limits and the MUC rules come from
examples/prosody.cfg.lua itself: its ``VirtualHost "anon.example.org"`` block,
its ``limits``/``unlimited_jids`` and its ``restrict_room_creation``/``admins``
lines are cut out of the file, renamed to the harness's domains and loaded into
a throwaway Prosody (harness ``web=True``: WebSocket and BOSH on loopback). A
session then does over WebSocket what the browser page does.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, running_bridge, wait_for
from tests.udp2xmpp.test_room_ownership import send
from tests.udp2xmpp.test_sink_memory import item

from .boshxmpp import bosh
from .wsxmpp import CLIENT, DELAY, WsXmpp, error_condition, q, websocket

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "prosody.cfg.lua").read_text()


def _localhost(text: str) -> str:
    return text.replace("conference.example.org", "conference.localhost").replace(
        "example.org", "localhost"
    )


def example_anonymous_host() -> str:
    """The body of the example's anonymous VirtualHost, for anon.localhost."""
    lines = EXAMPLE.splitlines()
    start = lines.index('VirtualHost "anon.example.org"') + 1
    body: list[str] = []
    for line in lines[start:]:
        if line and not line[0].isspace():
            break
        body.append(line)
    assert any("authentication" in line for line in body)
    return _localhost("\n".join(body))


def example_limits() -> str:
    """The example's global ``limits = {...}`` and ``unlimited_jids`` lines."""
    limits = re.search(r"^limits = \{\n.*?^\}\n", EXAMPLE, re.S | re.M)
    unlimited = re.search(r"^unlimited_jids = .*$", EXAMPLE, re.M)
    assert limits is not None and unlimited is not None
    return _localhost(limits.group(0) + unlimited.group(0) + "\n")


def example_muc_rules() -> str:
    lines = [
        line
        for line in EXAMPLE.splitlines()
        if line.strip().startswith(("restrict_room_creation", 'admins = { "rcbot@'))
    ]
    assert len(lines) == 2
    return _localhost("\n".join(lines) + "\n")


def shipped(factory: Callable[..., ProsodyServer]) -> ProsodyServer:
    assert '"websocket";' in EXAMPLE and '"bosh";' in EXAMPLE and '"limits";' in EXAMPLE
    return factory(
        web=True,
        anonymous_vhost=example_anonymous_host(),
        extra_global=example_limits(),
        extra_modules=("limits",),
        extra_muc=example_muc_rules(),
    )


def is_live_groupchat(sender: str) -> Callable[[ET.Element], bool]:
    def wanted(e: ET.Element) -> bool:
        return (
            e.tag == q(CLIENT, "message")
            and e.get("type") == "groupchat"
            and e.get("from") == sender
            and e.find(q(DELAY, "delay")) is None
        )

    return wanted


async def test_an_anonymous_browser_session_reads_a_public_room_and_nothing_more(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    prosody = shipped(prosody_factory)
    public, office = prosody.room_jid("openwiki"), prosody.room_jid("office")
    config = bridge_config(
        prosody,
        rooms={"wikis": ["openwiki"]},
        wikis={
            "officewiki": {
                "room": "office",
                "members_only": True,
                "members": [prosody.jid("reader")],
            }
        },
    )
    bridge = await running_bridge(config)
    try:
        await wait_for(
            lambda: {public, office} <= set(bridge.sink.joined_rooms()), what="the bridge's rooms"
        )
        async with websocket(prosody.websocket_url, prosody.anonymous_domain) as browser:
            jid = await browser.login()
            assert jid.split("@")[1].startswith(prosody.anonymous_domain)

            joined = await browser.join(public, "visitor")
            assert joined.get("type") is None, ET.tostring(joined)
            send(bridge, item(1, wiki="openwiki").change)
            change = await browser.until(is_live_groupchat(f"{public}/rcbot"))
            assert "Page 1" in ET.tostring(change, encoding="unicode")

            # Speaking in the bridge's (moderated) room: a visitor has no voice.
            await browser.send(
                f'<message xmlns="{CLIENT}" to="{public}" type="groupchat" id="forged">'
                "<body>a forged change</body></message>"
            )
            refused = await browser.until(
                lambda e: e.tag == q(CLIENT, "message") and e.get("id") == "forged"
            )
            assert refused.get("type") == "error" and error_condition(refused) == "forbidden"

            # A private wiki's members-only room stays closed.
            closed = await browser.join(office, "visitor")
            assert closed.get("type") == "error"
            assert error_condition(closed) == "registration-required"
    finally:
        await bridge.stop()


async def test_an_anonymous_session_cannot_create_rooms_or_register(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    prosody = shipped(prosody_factory)
    async with websocket(prosody.websocket_url, prosody.anonymous_domain) as browser:
        features = await browser.open()
        mechanisms = [m.text for m in features.iter(q(SASL_NS, "mechanism"))]
        assert mechanisms == ["ANONYMOUS"]
        assert features.find("{http://jabber.org/features/iq-register}register") is None
        # No in-band registration offered before login (no account to make here).
        await browser.send(f'<auth xmlns="{SASL_NS}" mechanism="ANONYMOUS"/>')
        assert (await browser.frame()).tag == q(SASL_NS, "success")
    async with websocket(prosody.websocket_url, prosody.anonymous_domain) as browser:
        await browser.login()
        created = await browser.join(prosody.room_jid("squatted"), "squatter")
        assert created.get("type") == "error" and error_condition(created) == "not-allowed"
        register = await browser.iq(
            "set",
            '<query xmlns="jabber:iq:register"><username>taken</username>'
            "<password>x</password></query>",
            to=prosody.anonymous_domain,
        )
        assert register.get("type") == "error"
        assert error_condition(register) == "service-unavailable"


SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
PADDING = " " * 1000


async def pings(client: WsXmpp, count: int, got: list[str]) -> None:
    for n in range(count):
        await client.send(
            f'<iq xmlns="{CLIENT}" type="get" id="p{n}" to="{client.domain}">'
            f'<ping xmlns="urn:xmpp:ping"/>{PADDING}</iq>'
        )
    while len(got) < count:
        frame = await client.frame(timeout=60)
        if frame.tag == q(CLIENT, "iq") and (frame.get("id") or "").startswith("p"):
            got.append(frame.get("type") or "")


async def test_anonymous_sessions_are_throttled_the_bridge_is_not(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    """mod_limits as the example sets it (c2s: 10 kB/s, 2 s burst; the bridge exempt):
    60 kB of pings from an anonymous session and from the bridge's account, sent
    together. The bridge's are all answered while the anonymous session's are
    still held back; then those are answered too (throttled, not dropped)."""
    prosody = shipped(prosody_factory)
    count = 60  # ~62 kB each: three times the 20 kB burst
    async with (
        websocket(prosody.websocket_url, prosody.anonymous_domain) as anonymous,
        websocket(prosody.websocket_url, prosody.domain) as bridge,
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
            assert held_back > count // 3, f"only {held_back} of {count} held back"
            await asyncio.wait_for(slow_task, 60)
        finally:
            slow_task.cancel()
            await asyncio.gather(slow_task, return_exceptions=True)
        assert slow == ["result"] * count


async def test_the_bosh_fallback_reads_a_public_room_as_an_anonymous_session(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    prosody = shipped(prosody_factory)
    public = prosody.room_jid("openwiki")
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": ["openwiki"]}))
    try:
        await wait_for(lambda: public in bridge.sink.joined_rooms(), what="the bridge's room")
        async with bosh(prosody.bosh_url, prosody.anonymous_domain) as browser:
            jid = await browser.login()
            assert jid.split("/")[0].endswith(f"@{prosody.anonymous_domain}")
            joined = await browser.join(public, "visitor")
            assert joined.get("type") is None, ET.tostring(joined)
            send(bridge, item(1, wiki="openwiki").change)
            change = await browser.until(is_live_groupchat(f"{public}/rcbot"))
            assert "Page 1" in ET.tostring(change, encoding="unicode")
            created = await browser.join(prosody.room_jid("squatted"), "squatter")
            assert created.get("type") == "error" and error_condition(created) == "not-allowed"
    finally:
        await bridge.stop()
