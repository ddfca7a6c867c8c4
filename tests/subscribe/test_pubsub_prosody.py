"""PubSub against real Prosody: the bridge's nodes, a subscriber's events, the last items.

The bridge creates its nodes at startup (items persisted, bounded, only it
publishes; open, or whitelisted for a members-only wiki), publishes each
change as an item whose id is the stable id, and `rcclient.pubsub.NodeReader`
receives the items as events and fetches the last ones after being away.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from harness.prosody import ProsodyServer
from rcclient.pubsub import NodeReader, NodeReaderError
from tests.helpers import bridge_config, running_bridge
from udp2xmpp.bridge import Bridge
from xmlrc_emitter import AsyncEmitter, RecentChange

from .helpers import change, until

PUBSUB = "http://jabber.org/protocol/pubsub"


def reader(server: ProsodyServer, node: str, user: str = "reader", **options: object) -> NodeReader:
    return NodeReader(
        server.jid(user),
        f"{user}pass",
        server.pubsub_domain,
        node,
        host=server.host,
        port=server.c2s_port,
        ca_file=str(server.ca_file),
        **options,  # type: ignore[arg-type]
    )


async def pubsub_bridge(server: ProsodyServer) -> Bridge:
    config = bridge_config(
        server,
        rooms={"wikis": ["pswiki"]},
        wikis={"secretwiki": {"members_only": True, "members": [server.jid("alice")]}},
        pubsub={"enabled": True, "service": server.pubsub_domain, "max_items": 50},
    )
    bridge = await running_bridge(config)
    publisher = bridge.pubsub
    assert publisher is not None
    await until(lambda: publisher.stats.node_setups >= 3, what="the nodes")  # 2 wikis + all
    return bridge


async def send(bridge: Bridge, *changes: RecentChange) -> None:
    publisher = bridge.pubsub
    assert publisher is not None
    expected = publisher.stats.confirmed + sum(
        2 if item.wiki == "pswiki" else 1
        for item in changes  # its node, and the all node
    )
    emitter = AsyncEmitter(*bridge.addresses[0])
    try:
        for item in changes:
            await emitter.send(item)
    finally:
        emitter.close()
    await until(lambda: publisher.stats.confirmed >= expected, what="the items to be published")


async def take(node: NodeReader, count: int) -> list[RecentChange]:
    got: list[RecentChange] = []

    async def read() -> None:
        async for item in node:
            got.append(item)
            if len(got) == count:
                return

    await asyncio.wait_for(read(), 10)
    return got


async def test_a_subscriber_gets_each_change_and_the_last_ones_after_being_away(
    pubsub_prosody: ProsodyServer,
) -> None:
    server = pubsub_prosody
    bridge = await pubsub_bridge(server)
    edits = [change(f"Page {n}", n, wiki="pswiki") for n in range(1, 8)]
    try:
        async with reader(server, "pswiki") as node:
            await send(bridge, *edits[:3])
            assert await take(node, 3) == edits[:3]
        # Away: three more changes are published meanwhile.
        await send(bridge, *edits[3:6])
        async with reader(server, "pswiki", subscribe=False) as node:
            assert await node.fetch_last(4) == edits[2:6]  # oldest first
            await send(bridge, edits[6])  # the subscription (of the bare JID) stayed
            assert await take(node, 1) == [edits[6]]
            assert node.duplicates == 0
            await node.unsubscribe()
        async with reader(server, "allwikis") as everything:
            assert await everything.fetch_last(50) == edits
        publisher = bridge.pubsub
        assert publisher is not None
        assert publisher.stats.errors == {} and publisher.stats.dropped_overflow == 0
    finally:
        await bridge.stop()


async def test_a_private_wikis_node_is_for_its_members_and_only_the_bridge_publishes(
    pubsub_prosody: ProsodyServer, tmp_path: Path
) -> None:
    server = pubsub_prosody
    bridge = await pubsub_bridge(server)
    secret = change("Plans", 1, wiki="secretwiki")
    try:
        with pytest.raises(
            NodeReaderError, match=r"cannot subscribe to node 'secretwiki'.*forbidden"
        ):
            async with reader(server, "secretwiki", user="intruder"):
                pass
        async with reader(server, "secretwiki", user="alice") as member:
            await send(bridge, secret)
            assert await take(member, 1) == [secret]
            assert await member.fetch_last(5) == [secret]
        async with reader(server, "allwikis", subscribe=False) as everything:
            assert secret not in await everything.fetch_last(50)  # never on the shared node

        intruder = slixmpp.ClientXMPP(server.jid("intruder"), "intruderpass")
        intruder.enable_direct_tls = False
        intruder.ca_certs = server.ca_file
        started = asyncio.Event()
        intruder.add_event_handler("session_start", lambda _: started.set())
        intruder.connect(server.host, server.c2s_port)
        try:
            await asyncio.wait_for(started.wait(), 20)
            iq = intruder.make_iq_set(ito=slixmpp.JID(server.pubsub_domain))
            pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
            publish = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish", {"node": "pswiki"})
            item = ET.SubElement(publish, f"{{{PUBSUB}}}item", {"id": "pswiki/666"})
            ET.SubElement(item, "{urn:xmlrc:rc:1}rc", {"wikiid": "pswiki", "title": "Spoof"})
            with pytest.raises(IqError) as refused:
                await iq.send(timeout=10)
            assert refused.value.iq["error"]["condition"] == "forbidden"
        finally:
            await asyncio.wait_for(intruder.disconnect(), 5)
    finally:
        await bridge.stop()
