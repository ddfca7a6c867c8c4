"""End to end: datagrams in every format, for two wikis, through the bridge and a
real Prosody, to a client, each change exactly once, in its wiki's room, whole."""

from __future__ import annotations

import asyncio

from harness.prosody import ProsodyServer
from tests.fixtures import JSON_FEED_PORT, XML_FEED_PORT, packets
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from xmlrc.wire import DatagramFormat, RecentChange, decode_datagram, encode_datagram
from xmlrc_emitter import Emitter

WIKIS = ("testwiki", "devwiki")


def datagrams_for_two_wikis() -> list[bytes]:
    """The real MediaWiki packets (JSON and XML feeds), our XMLRC datagrams, and each
    of them behind a line prefix, for testwiki and a copy relabelled devwiki."""
    out: list[bytes] = []
    for index, (json_packet, xml_packet) in enumerate(
        zip(packets(JSON_FEED_PORT), packets(XML_FEED_PORT), strict=True)
    ):
        for wiki in WIKIS:
            if wiki == "testwiki":
                as_json, as_xml = json_packet, xml_packet
            else:
                as_json = json_packet.replace(b'"wiki":"testwiki"', b'"wiki":"devwiki"')
                as_xml = xml_packet.replace(b'wiki="testwiki"', b'wiki="devwiki"')
            change = decode_datagram(as_json)
            assert isinstance(change, RecentChange)
            choice = index % 3
            if choice == 0:
                data = as_json
            elif choice == 1:
                data = as_xml
            else:
                data = encode_datagram(change, DatagramFormat.XMLRC)
            if index % 4 == 3:
                data = b"\n".join(b"rcfeed " + line for line in data.split(b"\n")) + b"\n"
            out.append(data)
    return out


async def test_every_change_arrives_once_in_its_room_with_every_field(
    prosody: ProsodyServer,
) -> None:
    config = bridge_config(prosody, rooms={"wikis": list(WIKIS)})
    bridge = await running_bridge(config)
    rooms = [f"{wiki}@{prosody.muc_domain}" for wiki in WIKIS]
    try:
        await wait_for(lambda: len(bridge.sink.joined_rooms()) == 2, what="the bridge's rooms")
        datagrams = datagrams_for_two_wikis()
        formats = {d.lstrip()[:1] for d in datagrams} | {d[:7] for d in datagrams}
        assert {b"{", b"<", b"rcfeed "} <= formats
        expected = [decode_datagram(d) for d in datagrams]
        async with reader(prosody, rooms) as client:
            host, port = bridge.addresses[0]
            with Emitter(host, port) as emitter:
                for data in datagrams[:5]:
                    emitter.send_raw(data)
                emitter.send_raw(b"<rc>not a change")  # dropped and counted, nothing else
                for data in datagrams[5:]:
                    emitter.send_raw(data)
            deliveries = await collect(client, len(expected))
    finally:
        await bridge.stop()

    assert len(deliveries) == len(expected)  # once each: no loss, no duplicates
    assert bridge.stats.rejected == {"bad_xml": 1}
    assert bridge.stats.accepted == len(expected)
    by_id = {d.change.stable_id: d for d in deliveries}
    assert len(by_id) == len(expected)
    for want in expected:
        assert isinstance(want, RecentChange)
        got = by_id[want.stable_id]
        assert got.room == f"{want.wiki}@{prosody.muc_domain}"
        assert got.change == want  # every field, as decoded from what was sent
    titles = {d.change.title for d in deliveries}
    assert "Ünïcödé — 日本語/テスト 1795300262" in titles
    assert max(len(d.change.comment) for d in deliveries) == 500


async def test_stanza_carries_body_rc_and_stable_id(prosody: ProsodyServer) -> None:
    """What a plain XMPP client sees: a readable body, the <rc> payload, an origin-id."""
    import slixmpp

    config = bridge_config(prosody, rooms={"wikis": ["bodywiki"]})
    bridge = await running_bridge(config)
    room = f"bodywiki@{prosody.muc_domain}"
    raw = slixmpp.ClientXMPP(prosody.jid("intruder"), "intruderpass")
    raw.register_plugin("xep_0045")
    raw.enable_direct_tls = False
    raw.ca_certs = str(prosody.ca_file)
    messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
    raw.add_event_handler("groupchat_message", messages.put_nowait)
    started = asyncio.Event()
    raw.add_event_handler("session_start", lambda _: started.set())
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        raw.connect(prosody.host, prosody.c2s_port)
        await asyncio.wait_for(started.wait(), 20)
        await raw.plugin["xep_0045"].join_muc_wait(slixmpp.JID(room), "plain", maxstanzas=0)
        change = decode_datagram(packets(JSON_FEED_PORT)[1].replace(b"testwiki", b"bodywiki"))
        assert isinstance(change, RecentChange)
        with Emitter(*bridge.addresses[0]) as emitter:
            emitter.send(change)
        message = await asyncio.wait_for(messages.get(), 20)
    finally:
        await bridge.stop()
        raw.disconnect()
    assert message["type"] == "groupchat"
    assert message["from"].resource == "rcbot"
    assert message["body"] == (
        "[[Sandbox1795300262]]  http://127.0.0.1:8080/index.php?diff=12&oldid=11&rcid=14"
        ' * Admin * (+8) plain edit <b>& "quotes"</b> [[Main Page|link]]'
    )
    rc = message.xml.find("{urn:xmlrc:rc:1}rc")
    assert rc is not None and rc.get("rcid") == "14" and rc.get("wikiid") == "bodywiki"
    origin = message.xml.find("{urn:xmpp:sid:0}origin-id")
    assert origin is not None and origin.get("id") == "bodywiki/14"
