"""Issue 11, "Private stays private", against real Prosody.

A members-only wiki with a room name of its own, and a datagram whose wiki ID
differs from it only by case: that wiki would have the private wiki's PubSub
node name. It is refused (and counted), and after a fresh (not resumed)
session, when every known node is set up again, the private node is still
``whitelist`` and an outsider still cannot read its items. And the watch
command answers an outsider about a private wiki exactly as about a wiki
nobody configured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.prosody import ProsodyServer
from rcclient.pubsub import NodeReaderError
from tests.helpers import bridge_config, running_bridge
from xmlrc.wire import change_from_element
from xmlrc.wire.rcxml import RC_TAG
from xmlrc.xmpp import pubsub as xep0060

from .helpers import Person, change, started, until
from .test_pubsub_prosody import reader
from .test_watch_prosody import send as send_datagrams
from .test_watch_prosody import watch_config


async def test_a_case_variant_wiki_id_never_opens_a_private_node(
    pubsub_prosody: ProsodyServer,
) -> None:
    server = pubsub_prosody
    config = bridge_config(
        server,
        rooms={"wikis": ["openvault"]},
        wikis={
            "vaultwiki": {
                "members_only": True,
                "members": [server.jid("alice")],
                "room": "vault-room",  # its own room name: "vaultwiki" is no room's
            }
        },
        pubsub={"enabled": True, "service": server.pubsub_domain, "max_items": 50},
    )
    bridge = await running_bridge(config)
    publisher = bridge.pubsub
    assert publisher is not None
    service = server.pubsub_domain
    try:
        await until(lambda: publisher.stats.node_setups >= 3, 20, "the nodes")
        secret = change("Plans", 1, wiki="vaultwiki")
        await send_datagrams(bridge, secret)
        await until(lambda: publisher.stats.confirmed >= 1, 20, "the secret item")

        spoof = change("Spoof", 2, wiki="VaultWiki")
        await send_datagrams(bridge, spoof)  # routed to an open room of its own, not PubSub
        assert publisher.stats.refused_reserved == 1

        setups, connections = publisher.stats.node_setups, bridge.session.connections
        server.restart()  # the stream is gone and cannot be resumed: a fresh session
        await until(lambda: bridge.session.connections > connections, 60, "a new session")
        await until(lambda: publisher.stats.node_setups >= setups + 3, 30, "the nodes again")
        await send_datagrams(bridge, change("Spoof again", 3, wiki="VaultWiki"))
        assert publisher.stats.refused_reserved == 2

        settings = await xep0060.get_node_config(
            bridge.session.client, service, "vaultwiki", timeout=20
        )
        assert settings["pubsub#access_model"] == "whitelist"
        with pytest.raises(NodeReaderError, match=r"node 'vaultwiki'.*forbidden"):
            async with reader(server, "vaultwiki", user="intruder", subscribe=False) as node:
                await node.fetch_last(10)
        async with reader(server, "vaultwiki", user="alice", subscribe=False) as member:
            assert await member.fetch_last(10) == [secret]  # and nothing spoofed in it
        assert publisher.stats.errors == {}
    finally:
        await bridge.stop()


async def test_an_outsider_is_answered_about_a_private_wiki_as_about_a_made_up_one(
    people: ProsodyServer, tmp_path: Path
) -> None:
    private = {"hushwiki": {"members_only": True, "members": [people.jid("bob")]}}
    bridge = await started(watch_config(people, tmp_path, "plainwiki", wikis=private))
    bot = people.jid("rcbot")
    try:
        async with Person(people, "alice", "alicepass") as alice:
            for command in ("watch {} Plans", "watchuser {} Carol", "watchfilter {} ns=0"):
                hush = await alice.ask(bot, command.format("hushwiki"))
                made_up = await alice.ask(bot, command.format("madeupwiki"))
                assert hush == made_up.replace("madeupwiki", "hushwiki"), (hush, made_up)
            listing = await alice.ask(bot, "list")
            assert listing.count("hushwiki") == listing.count("madeupwiki") == 3
            # Nothing of the private wiki reaches her, whatever she was told.
            await send_datagrams(bridge, change("Plans", 1, wiki="hushwiki", user="Carol"))
            assert await alice.quiet() == []
        async with Person(people, "bob", "bobpass") as bob:  # a member is served as before
            assert (await bob.ask(bot, "watch hushwiki Plans")).startswith("OK, watching")
            edit = change("Plans", 2, wiki="hushwiki")
            await send_datagrams(bridge, edit)
            assert change_from_element((await bob.next()).xml.find(RC_TAG)) == edit
    finally:
        await bridge.stop()
