"""Routing against a real Prosody, with the in-process bridge (and, for SIGHUP, the
``udp2xmpp`` program): filtered rooms get exactly their matches, the all-wikis room
everything, a private wiki's room only its members; unknown wikis dropped when asked;
a reload changes the routing without a reconnect.

Each test uses wiki and room names of its own on the shared server.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import slixmpp

from harness.prosody import ProsodyServer
from rcclient import Delivery, RCClient
from tests.helpers import (
    bridge_config,
    bridge_toml,
    collect,
    reader,
    running_bridge,
    wait_for,
)
from udp2xmpp.bridge import Bridge
from xmlrc.wire import RecentChange
from xmlrc_emitter import Emitter

BIN = Path(sys.executable).parent


def rc(wiki: str, rcid: int, **fields: Any) -> RecentChange:
    values: dict[str, Any] = {
        "type": "edit",
        "ns": 0,
        "title": f"Page {rcid}",
        "user": "Alice",
        "revid": rcid + 1000,
        "old_revid": rcid + 999,
        "oldlen": 100,
        "newlen": 120,
        "timestamp": datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
    }
    values.update(fields)
    return RecentChange(wiki=wiki, rcid=rcid, **values)


def send(bridge: Bridge, changes: list[RecentChange]) -> None:
    with Emitter(*bridge.addresses[0]) as emitter:
        for change in changes:
            emitter.send(change)


async def rooms_joined(bridge: Bridge, prosody: ProsodyServer, *names: str) -> None:
    """Wait until the bridge is in (and has configured) these rooms."""
    jids = {prosody.room_jid(name) for name in names}
    await wait_for(lambda: jids <= set(bridge.sink.joined_rooms()), what=f"rooms {sorted(jids)}")


def once_each(deliveries: list[Delivery], client: RCClient) -> list[str]:
    """The stable ids delivered, checking that none came twice."""
    ids = [d.change.stable_id for d in deliveries]
    assert len(ids) == len(set(ids)) and client.duplicates == 0
    return sorted(ids)


async def join_error(prosody: ProsodyServer, user: str, password: str, room: str) -> str:
    """Try to join `room` as `user` with a plain XMPP client; the error condition.

    (A plain client, because slixmpp's ``join_muc_wait`` waits out its timeout on
    Prosody's refusal: Prosody's error presence does not echo the MUC ``<x/>``
    that slixmpp's error handler matches on.)
    """
    client = slixmpp.ClientXMPP(prosody.jid(user), password)
    client.register_plugin("xep_0045")
    client.enable_direct_tls = False
    client.ca_certs = prosody.ca_file
    started = asyncio.Event()
    answers: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
    client.add_event_handler("session_start", lambda _: started.set())
    client.add_event_handler("presence", answers.put_nowait)
    client.connect(prosody.host, prosody.c2s_port)
    try:
        await asyncio.wait_for(started.wait(), 20)
        muc = client.plugin["xep_0045"]
        muc.make_join_stanza(slixmpp.JID(room), user, maxstanzas=0).send()
        while True:  # bounded by the timeout: the room answers our join once
            answer = await asyncio.wait_for(answers.get(), 20)
            if answer["from"].bare == room:
                break
    finally:
        client.disconnect()
    assert answer["type"] == "error", f"{user} was let into {room}"
    return str(answer["error"]["condition"])


def ids(changes: list[RecentChange]) -> list[str]:
    return sorted(c.stable_id for c in changes)


async def test_filtered_rooms_get_exactly_their_matches_and_the_all_room_everything(
    prosody: ProsodyServer,
) -> None:
    config = bridge_config(
        prosody,
        rooms={
            "wikis": ["rt1en", "rt1de"],
            "all_room": "rt1-all",
            "filtered": [
                {"room": "rt1-en-new", "wiki": "rt1en", "type": "new", "ns": 0},
                {"room": "rt1-big-human", "bot": False, "min_change": 1000},
            ],
        },
    )
    # A mix: three wikis (rt1xx is not in the config: created), types, namespaces,
    # bots and sizes, so each filter key both takes and leaves changes.
    changes: list[RecentChange] = []
    for n in range(24):
        wiki = ("rt1en", "rt1de", "rt1xx")[n % 3]
        kind = ("new", "edit", "log")[n // 3 % 3]
        sizes = {"oldlen": None, "newlen": 5000 if n % 2 else 50} if kind == "new" else {}
        if kind == "log":
            sizes = {"oldlen": None, "newlen": None}
        changes.append(rc(wiki, n + 1, type=kind, ns=(0, 1)[n // 4 % 2], bot=n % 5 == 0, **sizes))
    changes.append(rc("rt1de", 100, oldlen=10, newlen=2000))  # a big human edit
    en_new = [c for c in changes if c.wiki == "rt1en" and c.type == "new" and c.ns == 0]
    big_human = [c for c in changes if not c.bot and (c.size_change or 0) >= 1000]
    assert en_new and big_human and len(en_new) + len(big_human) < len(changes)

    bridge = await running_bridge(config)
    try:
        await rooms_joined(
            bridge, prosody, "rt1en", "rt1de", "rt1-all", "rt1-en-new", "rt1-big-human"
        )
        clients = {
            name: reader(prosody, [prosody.room_jid(name)])
            for name in ("rt1-all", "rt1-en-new", "rt1-big-human")
        }
        for client in clients.values():
            await client.connect()
        try:
            send(bridge, changes)
            got_all, got_new, got_big = await asyncio.gather(
                collect(clients["rt1-all"], len(changes)),
                collect(clients["rt1-en-new"], len(en_new)),
                collect(clients["rt1-big-human"], len(big_human)),
            )
        finally:
            for client in clients.values():
                await client.close()
    finally:
        await bridge.stop()

    assert once_each(got_all, clients["rt1-all"]) == ids(changes)
    assert once_each(got_new, clients["rt1-en-new"]) == ids(en_new)
    assert once_each(got_big, clients["rt1-big-human"]) == ids(big_human)
    sent = {c.stable_id: c for c in changes}
    assert all(d.change == sent[d.change.stable_id] for d in got_all)  # whole, unchanged
    assert bridge.stats.accepted == len(changes) and not bridge.stats.rejected


async def test_private_wiki_room_admits_members_only(prosody: ProsodyServer) -> None:
    room = prosody.room_jid("rt2secret")
    config = bridge_config(
        prosody,
        rooms={"all_room": "rt2-all"},
        wikis={
            "rt2secret": {
                "title": "Secret wiki",
                "description": "Changes of the secret wiki",
                "server_url": "https://secret.example",
                "server_script_path": "/w",
                "members_only": True,
                "members": [prosody.jid("reader")],
            }
        },
    )
    bridge = await running_bridge(config)
    try:
        await rooms_joined(bridge, prosody, "rt2secret", "rt2-all")
        assert (
            await join_error(prosody, "intruder", "intruderpass", room) == "registration-required"
        )
        async with (
            reader(prosody, [room]) as member,
            reader(prosody, [prosody.room_jid("rt2-all")]) as everyone,
        ):
            info = await member.xmpp.plugin["xep_0030"].get_info(jid=room, timeout=20)
            assert "muc_membersonly" in info["disco_info"]["features"]
            # The room as the bridge configured it from the wiki's override.
            assert ("conference", "text", None, "Secret wiki") in info["disco_info"]["identities"]
            about = info["disco_info"]["form"].get_values()
            assert about["muc#roominfo_description"] == "Changes of the secret wiki"
            secret = rc("rt2secret", 1)  # no server fields: the wiki's override fills them
            public = rc("rt2pub", 2, server_url="http://pub.example", server_script_path="")
            send(bridge, [secret, public])
            got_member, got_everyone = await asyncio.gather(
                collect(member, 1), collect(everyone, 1)
            )
    finally:
        await bridge.stop()

    assert [d.change.stable_id for d in got_member] == ["rt2secret/1"]
    delivered = got_member[0].change
    assert delivered.diff_url == "https://secret.example/w/index.php?diff=1001&oldid=1000"
    assert delivered.server_name == "secret.example"
    assert delivered == secret.with_changes(
        server_url="https://secret.example", server_name="secret.example", server_script_path="/w"
    )
    # The all-wikis room never sees the private wiki.
    assert [d.change.stable_id for d in got_everyone] == ["rt2pub/2"]


async def test_unknown_wikis_dropped_when_the_config_says_so(prosody: ProsodyServer) -> None:
    config = bridge_config(
        prosody, rooms={"wikis": ["rt3known"], "unknown_wikis": "drop", "all_room": "rt3-all"}
    )
    changes = [rc("rt3known" if n % 2 else "rt3stranger", n) for n in range(1, 9)]
    known = [c for c in changes if c.wiki == "rt3known"]
    bridge = await running_bridge(config)
    try:
        await rooms_joined(bridge, prosody, "rt3known", "rt3-all")
        async with reader(prosody, [prosody.room_jid("rt3-all")]) as client:
            send(bridge, changes)
            got = await collect(client, len(known))
    finally:
        await bridge.stop()
    assert once_each(got, client) == ids(known)
    assert bridge.stats.rejected == {"unknown_wiki": len(changes) - len(known)}
    assert bridge.stats.accepted == len(known)
    assert prosody.room_jid("rt3stranger") not in bridge.sink.queue_depths()  # never opened


async def test_reload_changes_routing_on_the_same_connection(prosody: ProsodyServer) -> None:
    before = bridge_config(prosody, rooms={"wikis": ["rt4a"]})
    after = bridge_config(
        prosody,
        rooms={
            "wikis": ["rt4a"],
            "unknown_wikis": "drop",
            "filtered": [{"room": "rt4-new", "type": "new"}],
        },
    )
    bridge = await running_bridge(before)
    try:
        await rooms_joined(bridge, prosody, "rt4a")
        async with reader(prosody, [prosody.room_jid("rt4a")]) as own:
            send(bridge, [rc("rt4b", 1)])  # unknown, created under the first config
            await wait_for(lambda: prosody.room_jid("rt4b") in bridge.sink.joined_rooms())
            bridge.reload(after)
            await rooms_joined(bridge, prosody, "rt4-new")  # joined at reload, before any change
            async with reader(prosody, [prosody.room_jid("rt4-new")]) as new:
                changes = [
                    rc("rt4a", 2, type="new", oldlen=None),
                    rc("rt4a", 3),
                    rc("rt4b", 4, type="new", oldlen=None),  # now unknown and dropped
                    rc("rt4a", 5, type="new", oldlen=None),
                ]
                send(bridge, changes)
                got_new, got_own = await asyncio.gather(collect(new, 2), collect(own, 3))
    finally:
        await bridge.stop()
    assert once_each(got_new, new) == ["rt4a/2", "rt4a/5"]
    assert once_each(got_own, own) == ["rt4a/2", "rt4a/3", "rt4a/5"]
    assert bridge.stats.rejected == {"unknown_wiki": 1}
    assert bridge.sink.stats.connections == 1  # one session from start to stop
    assert bridge.config.rooms.routing.unknown_wikis == "drop"


def write_config(path: Path, prosody: ProsodyServer, udp_port: int, extra: str = "") -> None:
    path.write_text(bridge_toml(prosody, udp_port, f'wikis = ["rt5"]\n{extra}\n'))


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sighup_reloads_the_config_file_without_reconnecting(
    tmp_path: Path, prosody: ProsodyServer
) -> None:
    udp_port = free_udp_port()
    config = tmp_path / "bridge.toml"
    write_config(config, prosody, udp_port)
    log_path = tmp_path / "bridge.log"

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "udp2xmpp"), "--config", str(config), "--log-level", "info",
            stdout=log_file, stderr=log_file, env={"TEST_BRIDGE_PASSWORD": "bridgepass"},
        )  # fmt: skip
    try:
        await wait_for(lambda: f"joined {prosody.room_jid('rt5')}" in log_text(), 30, "startup")
        filtered = '[[rooms.filtered]]\nroom = "rt5-new"\nwiki = "rt5"\ntype = "new"\n'
        write_config(config, prosody, udp_port, filtered)
        process.send_signal(signal.SIGHUP)
        new_room = prosody.room_jid("rt5-new")
        await wait_for(lambda: f"joined {new_room}" in log_text(), 30, "the new room")
        async with reader(prosody, [new_room]) as client:
            with Emitter("127.0.0.1", udp_port) as emitter:
                for n in range(1, 5):
                    emitter.send(rc("rt5", n, type="new" if n % 2 else "edit", oldlen=None))
            got = await collect(client, 2)
            assert once_each(got, client) == ["rt5/1", "rt5/3"]

            # A broken config: logged, and the routing in force stays.
            write_config(config, prosody, udp_port, filtered + 'title_regex = "(oops"\n')
            process.send_signal(signal.SIGHUP)
            await wait_for(lambda: "reload failed" in log_text(), 30, "the refused reload")
            with Emitter("127.0.0.1", udp_port) as emitter:
                emitter.send(rc("rt5", 5, type="new", oldlen=None))
            got = await collect(client, 1)
            assert [d.change.stable_id for d in got] == ["rt5/5"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    text = log_text()
    assert text.count("reloaded routing") == 1
    assert "rooms.filtered[0].title_regex: bad regex '(oops'" in text
    assert text.count("connected as") == 1  # one session: the reloads did not reconnect
    assert "disconnected" not in text and "reconnecting" not in text
    assert "stopped" in text
