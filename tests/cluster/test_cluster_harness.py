"""The throwaway two-node ejabberd cluster (harness.ejabberd.EjabberdCluster): both nodes
form one Mnesia cluster, a room created through one node carries messages between
occupants on either node, and nothing of it is left running after cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness.ejabberd import EjabberdCluster, EjabberdServer
from harness.prosody import _stream_answers
from tests.helpers import wait_for
from xmlrc.xmpp import Endpoint, Session, muc


@asynccontextmanager
async def occupant(
    node: EjabberdServer, user: str, password: str, room: str, inbox: list[tuple[str, str]]
) -> AsyncIterator[Session]:
    """`user` logged in through `node` and in `room` as nick `user`; every groupchat
    message it gets lands in `inbox` as (nick, body)."""
    session = Session(
        Endpoint(node.jid(user), password, node.host, node.c2s_port, str(node.ca_file))
    )
    client = session.client

    def on_message(stanza: Any) -> None:
        if stanza["type"] == "groupchat" and stanza["body"]:
            inbox.append((stanza["from"].resource, stanza["body"]))

    client.register_handler(
        Callback(f"inbox {user}", MatchXPath(f"{{{client.default_ns}}}message"), on_message)
    )
    await session.start(wait=True)
    try:
        await muc.join(client, room, user, timeout=20)
        yield session
    finally:
        await session.stop()


def say(session: Session, room: str, body: str) -> None:
    session.client.send_message(mto=slixmpp.JID(room), mbody=body, mtype="groupchat")


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie, dead and waiting for
    its parent to reap it, does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ")".
        state, _ppid, pgrp = text.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


async def test_a_room_made_through_one_node_carries_messages_both_ways() -> None:
    cluster = EjabberdCluster(nodes=2)
    pids: list[int] = []
    try:
        cluster.start()
        first, second = cluster.nodes
        pids = [pid for pid in (first.pid, second.pid) if pid is not None]
        assert len(pids) == 2
        assert (first.host, second.host) == ("127.0.0.2", "127.0.0.3")
        assert first.dist_port == second.dist_port == cluster.dist_port
        both = sorted([first.node, second.node])
        assert sorted(first.cluster_members()) == both
        assert sorted(second.cluster_members()) == both
        cluster.add_user("alice", "alicepass")
        cluster.add_user("bob", "bobpass")

        room = cluster.room_jid("clusterwiki")
        at_alice: list[tuple[str, str]] = []
        at_bob: list[tuple[str, str]] = []
        # The room is made through node 1 first (two first joins at once through both
        # nodes would make two rooms), then bob enters it through node 2.
        async with occupant(first, "alice", "alicepass", room, at_alice) as alice:
            assert cluster.node_of(cluster.jid("alice")) is first
            async with occupant(second, "bob", "bobpass", room, at_bob) as bob:
                assert cluster.node_of(cluster.jid("bob")) is second
                for n in range(3):
                    say(alice, room, f"from node 1: {n}")
                    say(bob, room, f"from node 2: {n}")
                expected = sorted(
                    [("alice", f"from node 1: {n}") for n in range(3)]
                    + [("bob", f"from node 2: {n}") for n in range(3)]
                )
                await wait_for(lambda: len(at_alice) >= 6, what="6 messages at alice")
                await wait_for(lambda: len(at_bob) >= 6, what="6 messages at bob")
                await asyncio.sleep(0.3)  # nothing more (no duplicates) comes
                assert sorted(at_alice) == expected
                assert sorted(at_bob) == expected

        # A frozen node answers nothing, and again once thawed.
        second.freeze()
        assert not _stream_answers(second.host, second.c2s_port, second.domain, timeout=0.5)
        second.thaw()
        await wait_for(
            lambda: _stream_answers(second.host, second.c2s_port, second.domain),
            what="node 2 thawed",
        )
        # A killed node is gone from the cluster; restarted, it is back from its spool.
        second.kill()
        assert not second.running and cluster.running
        assert first.cluster_members() == [first.node]
        second.start()
        assert sorted(cluster.wait_members()) == both
        assert "bob" in second.ctl("registered_users", second.domain).split()
    finally:
        cluster.cleanup()
    assert not cluster.running
    assert not cluster.directory.exists()
    assert pids and not any(group_alive(pid) for pid in pids)


def test_the_options_reach_every_node_config() -> None:
    """mam=True archives every room in Mnesia; anonymous_shaped=False leaves the
    anonymous host unshaped (a fan-out benchmark's 1,000 readers); the nodes share
    the certificate, the cookie and the distribution port, each on its own address."""
    cluster = EjabberdCluster(mam=True, anonymous_host=True, anonymous_shaped=False)
    try:
        configs = [(node.directory / "ejabberd.yml").read_text() for node in cluster.nodes]
        for node, config in zip(cluster.nodes, configs, strict=True):
            assert "mod_mam:\n    db_type: mnesia" in config
            assert "mam: true" in config
            assert "anon.localhost" in config and "auth_method: anonymous" in config
            assert "shaper" not in config
            assert f'ip: "{node.host}"' in config
            assert (
                node.certificate_file.read_bytes() == cluster.nodes[0].certificate_file.read_bytes()
            )
            cookie = node.directory / "home" / ".erlang.cookie"
            assert cookie.stat().st_mode & 0o777 == 0o400
            assert (
                cookie.read_text()
                == (cluster.nodes[0].directory / "home" / ".erlang.cookie").read_text()
            )
        assert len({node.node for node in cluster.nodes}) == 2
    finally:
        cluster.cleanup()
    shaped = EjabberdCluster(anonymous_host=True)
    try:
        config = (shaped.nodes[1].directory / "ejabberd.yml").read_text()
        assert "anonymous_reader: 1000" in config and "shaper: c2s_shaper" in config
        assert "mod_mam" not in config and "mam: false" in config
    finally:
        shaped.cleanup()
