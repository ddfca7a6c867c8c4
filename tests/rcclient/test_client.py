"""RCClient against real Prosody and the real bridge: filters and callbacks, a cut
connection, a restarted server, a kick, gaps, resume, since, the blocking iterator."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import rcclient
from harness.prosody import ProsodyServer
from rcclient import ChangeFilter, Delivery, RCClientError, RecentChange
from tests.helpers import reader, wait_for
from tests.rcclient.util import (
    Reader,
    bridge_for,
    change,
    published,
    room_of,
    send,
    send_steadily,
)


async def test_filters_and_callbacks_on_the_live_stream(prosody: ProsodyServer) -> None:
    wikis = ("filterwiki", "otherwiki")
    stream = [
        change("filterwiki", 1),
        change("filterwiki", 2, type="new", old_revid=None, oldlen=None, newlen=50),
        change("filterwiki", 3, bot=True),
        change("filterwiki", 4, ns=1, title="Talk:Page 4"),
        change("otherwiki", 5),
        change("filterwiki", 6, user="Spammer"),
        change("filterwiki", 7, oldlen=5000, newlen=100),  # a large removal
        change("otherwiki", 8, oldlen=900, newlen=100, bot=True),  # another, by a bot
        change("filterwiki", 9, title="Sandbox/9", minor=True),
    ]
    markers = [change("filterwiki", 10, title="Marker"), change("otherwiki", 11, title="Marker")]
    client = reader(prosody, [room_of(prosody, w) for w in wikis])
    async with bridge_for(prosody, *wikis) as bridge, client:
        client.register_filter(ftype="none", user="Spammer")  # client-wide, pywikibot-style
        new_pages: list[int | None] = []
        removals: list[int | None] = []
        sandbox_or_bot: list[int | None] = []

        @client.on_change(type="new")
        def on_new(item: RecentChange) -> None:
            new_pages.append(item.rcid)

        @client.on_change(max_change=-500)
        async def on_removal(item: RecentChange) -> None:
            await asyncio.sleep(0)
            removals.append(item.rcid)

        either = ChangeFilter(ftype="any", title=r"^Sandbox/", bot=True)

        @client.on_change(where=either)
        def on_either(item: RecentChange) -> None:
            sandbox_or_bot.append(item.rcid)

        other_done = asyncio.Event()
        client.on_change(lambda _item: other_done.set(), wiki="otherwiki", title="^Marker$")
        send(bridge, [*stream, *markers])
        got: list[RecentChange] = []

        async def read() -> None:
            async for item in client.changes(wiki="filterwiki", ns=0, bot=False):
                got.append(item)
                if item.title == "Marker":
                    break
            # The other room's changes may come later: take them, up to its marker.
            if not other_done.is_set():
                async for _item in client.changes():
                    if other_done.is_set():
                        break

        await asyncio.wait_for(read(), 30)

    assert [c.rcid for c in got] == [1, 2, 7, 9, 10]  # filterwiki, ns 0, no bot, no Spammer
    assert all(c.timestamp.utcoffset() == timedelta(0) for c in got)  # aware, UTC
    assert got[2].size_change == -4900 and got[2].diff_url is not None
    # Handlers see every change taken from the client (the client-wide filter applies).
    assert new_pages == [2]
    assert sorted(removals) == [7, 8]
    assert sorted(sandbox_or_bot) == [3, 8, 9]


async def test_cut_socket_while_changes_flow_each_change_once_in_order(
    prosody: ProsodyServer,
) -> None:
    wiki = "cutwiki"
    changes = [change(wiki, n) for n in range(1, 161)]
    async with bridge_for(prosody, wiki) as bridge:
        client = reader(prosody, [room_of(prosody, wiki)], reconnect_delay=0.5)
        async with client, Reader(client) as seen:
            sender = asyncio.create_task(send_steadily(bridge, changes, interval=0.01))
            try:
                await seen.wait_count(30)
                client.xmpp.transport.abort()  # the client's socket dies
                await wait_for(lambda: client.connections == 2, 20, "a second connection")
                await seen.wait_count(100)
                client.xmpp.transport.abort()  # and once more
                await wait_for(lambda: client.connections == 3, 20, "a third connection")
                await sender
                await seen.wait_count(len(changes))
                await asyncio.sleep(0.5)  # anything extra would show up now
            finally:
                sender.cancel()
    assert seen.rcids() == list(range(1, 161))  # each once, in order
    assert client.connections == 3
    assert any(d.replayed for d in seen.deliveries)  # some came from the archive
    assert not seen.gaps


async def test_server_restart_while_changes_flow_each_change_once(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    server = prosody_factory(muc_log_storage="sql")
    wiki = "restartwiki"
    changes = [change(wiki, n) for n in range(1, 201)]
    async with bridge_for(server, wiki) as bridge:
        client = reader(
            server, [room_of(server, wiki)], reconnect_delay=0.3, reconnect_max_delay=1.0
        )
        async with client, Reader(client) as seen:
            sender = asyncio.create_task(send_steadily(bridge, changes, interval=0.01))
            try:
                await seen.wait_count(40)
                await asyncio.to_thread(server.restart)  # changes keep coming meanwhile
                await sender
                await seen.wait_count(len(changes), timeout=60)
                await asyncio.sleep(0.5)
            finally:
                sender.cancel()
    rcids = seen.rcids()
    assert sorted(rcids) == list(range(1, 201))  # every change ...
    assert len(rcids) == len(set(rcids))  # ... exactly once
    assert rcids == sorted(rcids)  # ... in order
    assert client.connections >= 2
    assert not seen.gaps  # the archive survived the restart (SQL storage)


async def test_kicked_from_the_room_rejoins_and_catches_up(prosody: ProsodyServer) -> None:
    import slixmpp

    wiki = "kickwiki"
    room = room_of(prosody, wiki)
    async with bridge_for(prosody, wiki) as bridge:
        client = reader(prosody, [room], ping_interval=600)  # only the room's word counts
        owner = slixmpp.ClientXMPP(prosody.jid("rcbot"), "bridgepass")  # the room's owner
        owner.register_plugin("xep_0045")
        owner.enable_direct_tls = False
        owner.ca_certs = prosody.ca_file
        started = asyncio.Event()
        owner.add_event_handler("session_start", lambda _: started.set())
        async with client, Reader(client) as seen:
            send(bridge, [change(wiki, n) for n in range(1, 6)])
            await seen.wait_count(5)
            owner.connect(prosody.host, prosody.c2s_port)
            try:
                await asyncio.wait_for(started.wait(), 20)
                muc = owner.plugin["xep_0045"]
                await muc.join_muc_wait(slixmpp.JID(room), "moderator", maxstanzas=0)
                await muc.set_role(room, client.nick, "none")  # kick the reader
                send(bridge, [change(wiki, n) for n in range(6, 31)])
                await seen.wait_count(30)
                await asyncio.sleep(0.5)
            finally:
                owner.disconnect()
    assert seen.rcids() == list(range(1, 31))
    assert client.connections == 1  # the same connection: a rejoin, not a reconnect
    assert not seen.gaps


async def test_unresponsive_server_is_noticed_by_self_ping(fresh_prosody: ProsodyServer) -> None:
    wiki = "frozenwiki"
    room = room_of(fresh_prosody, wiki)
    async with bridge_for(fresh_prosody, wiki) as bridge:
        client = reader(
            fresh_prosody,
            [room],
            ping_interval=0.5,
            ping_timeout=1.0,
            connect_timeout=3.0,
            reconnect_delay=0.3,
            reconnect_max_delay=1.0,
        )
        async with client, Reader(client) as seen:
            send(bridge, [change(wiki, n) for n in range(1, 6)])
            await seen.wait_count(5)
            fresh_prosody.freeze()  # the socket stays open; nothing answers
            try:
                send(bridge, [change(wiki, n) for n in range(6, 16)])  # the bridge holds them
                await wait_for(lambda: not client.connected, 20, "the client noticing")
            finally:
                fresh_prosody.thaw()
            await seen.wait_count(15, timeout=60)
            await asyncio.sleep(0.5)
    assert seen.rcids() == list(range(1, 16))
    assert client.connections >= 2
    assert not seen.gaps


async def test_resume_with_a_state_file_across_two_clients(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wiki = "resumewiki"
    room = room_of(prosody, wiki)
    state = tmp_path / "state.json"
    async with bridge_for(prosody, wiki) as bridge:
        first = reader(prosody, [room], state_file=state)
        async with first, Reader(first) as seen_first:
            send(bridge, [change(wiki, n) for n in range(1, 11)])
            await seen_first.wait_count(10)
        saved = json.loads(state.read_text())["rooms"][room]
        assert saved["archive_id"] == seen_first.deliveries[-1].archive_id
        send(bridge, [change(wiki, n) for n in range(11, 21)])  # nobody is reading
        await published(bridge, 20)
        second = reader(prosody, [room], state_file=state)
        async with second, Reader(second) as seen_second:
            await seen_second.wait_count(10)
            send(bridge, [change(wiki, n) for n in range(21, 26)])
            await seen_second.wait_count(15)
            await asyncio.sleep(0.5)
    assert seen_first.rcids() == list(range(1, 11))
    assert seen_second.rcids() == list(range(11, 26))  # no loss, no repeat
    assert all(d.replayed for d in seen_second.deliveries[:10])
    assert not any(d.replayed for d in seen_second.deliveries[10:])
    assert not seen_second.gaps


async def test_gap_longer_than_the_archive_is_reported(
    prosody_factory: Callable[..., ProsodyServer], tmp_path: Path
) -> None:
    # The room's archive keeps about 20 messages: older ones are truncated away.
    server = prosody_factory(extra_muc="  storage_archive_item_limit = 20")
    wiki = "gapwiki"
    room = room_of(server, wiki)
    state = tmp_path / "state.json"
    async with bridge_for(server, wiki) as bridge:
        first = reader(server, [room], state_file=state)
        async with first, Reader(first) as seen_first:
            send(bridge, [change(wiki, n) for n in range(1, 6)])
            await seen_first.wait_count(5)
        last_seen = seen_first.deliveries[-1]
        send(bridge, [change(wiki, n) for n in range(6, 46)])  # 40 while away: too many
        await published(bridge, 45)
        second = reader(server, [room], state_file=state)
        async with second, Reader(second) as seen_second:
            await wait_for(lambda: len(seen_second.gaps) == 1, 30, "the gap")
            send(bridge, [change(wiki, n) for n in range(46, 51)])
            await wait_for(lambda: 50 in seen_second.rcids(), 30, "the live changes")
            await asyncio.sleep(0.5)
    gap = seen_second.gaps[0]
    assert gap.room == room
    assert gap.last_seen_id == last_seen.archive_id
    assert gap.last_seen_time == last_seen.change.timestamp
    assert "no longer holds" in gap.reason
    rcids = seen_second.rcids()
    oldest = rcids[0]
    assert 6 < oldest <= 30  # the archive lost 6.. (and kept the newest ~20)
    assert rcids == list(range(oldest, 51))  # what it kept, then live: contiguous
    assert gap.next_id == seen_second.deliveries[0].archive_id
    assert len(seen_second.gaps) == 1


async def test_archive_lost_in_a_server_restart_is_a_gap_then_nothing_more_is_lost(
    fresh_prosody: ProsodyServer,
) -> None:
    # Archive in memory: a restart forgets it, so the client cannot check what it missed.
    wiki = "lostwiki"
    room = room_of(fresh_prosody, wiki)
    async with bridge_for(fresh_prosody, wiki) as bridge:
        client = reader(fresh_prosody, [room], reconnect_delay=0.3, reconnect_max_delay=1.0)
        async with client, Reader(client) as seen:
            send(bridge, [change(wiki, n) for n in range(1, 11)])
            await seen.wait_count(10)
            await asyncio.to_thread(fresh_prosody.restart)
            send(bridge, [change(wiki, n) for n in range(11, 21)])
            await seen.wait_count(20)
            await wait_for(lambda: len(seen.gaps) == 1, 20, "the gap")
            await asyncio.sleep(0.5)
    assert seen.rcids() == list(range(1, 21))
    (gap,) = seen.gaps
    assert gap.last_seen_id == seen.deliveries[9].archive_id
    assert "no longer holds" in gap.reason


async def test_since_replays_the_archive_first(prosody: ProsodyServer) -> None:
    wiki = "sincewiki"
    room = room_of(prosody, wiki)
    async with bridge_for(prosody, wiki) as bridge:
        send(bridge, [change(wiki, n) for n in range(1, 8)])
        await published(bridge, 7)
        client = reader(prosody, [room], since=timedelta(minutes=10))
        async with client, Reader(client) as seen:
            await seen.wait_count(7)
            send(bridge, [change(wiki, 8)])
            await seen.wait_count(8)
    assert seen.rcids() == list(range(1, 9))
    assert [d.replayed for d in seen.deliveries] == [True] * 7 + [False]


async def test_iter_changes_blocking_iterator(prosody: ProsodyServer) -> None:
    wiki = "blockingwiki"
    room = room_of(prosody, wiki)
    async with bridge_for(prosody, wiki) as bridge:
        stream = rcclient.iter_changes(
            prosody.jid("reader"),
            "readerpass",
            [room],
            host=prosody.host,
            port=prosody.c2s_port,
            ca_file=str(prosody.ca_file),
            ns=0,  # a filter keyword
        )

        def take(count: int) -> list[RecentChange]:
            with stream:
                return list(itertools.islice(stream, count))

        reading = asyncio.create_task(asyncio.to_thread(take, 4))
        send(
            bridge, [change(wiki, 1), change(wiki, 2, ns=4), *(change(wiki, n) for n in (3, 4, 5))]
        )
        got = await asyncio.wait_for(reading, 30)
    assert [c.rcid for c in got] == [1, 3, 4, 5]
    assert not stream.running  # closed: the client and its thread are gone


async def test_library_errors(prosody: ProsodyServer, tmp_path: Path) -> None:
    room = room_of(prosody, "nosuchroom-lib")
    with pytest.raises(RCClientError, match=r"^no such room: nosuchroom-lib@conference"):
        async with reader(prosody, [room]):
            pass
    wrong = rcclient.RCClient(
        prosody.jid("reader"),
        "wrong",
        [room],
        host=prosody.host,
        port=prosody.c2s_port,
        ca_file=str(prosody.ca_file),
    )
    with pytest.raises(RCClientError, match=r"^the server refused the password for reader@"):
        await wrong.connect()
    bad_state = tmp_path / "state.json"
    bad_state.write_text("{not json")
    with pytest.raises(RCClientError, match=r"state file .* is not valid"):
        await reader(prosody, [room], state_file=bad_state).connect()
    with pytest.raises(RCClientError, match=r"^no such room"):
        rcclient.iter_changes(
            prosody.jid("reader"),
            "readerpass",
            [room],
            host=prosody.host,
            port=prosody.c2s_port,
            ca_file=str(prosody.ca_file),
        )


def test_delivery_keeps_its_positional_form() -> None:
    item = change("w", 1)
    delivery = Delivery("w@conference.localhost", item, "abc")
    assert (delivery.room, delivery.change, delivery.archive_id, delivery.replayed) == (
        "w@conference.localhost",
        item,
        "abc",
        False,
    )


def test_publisher_jid_is_one_jid_or_several() -> None:
    def client(publisher_jid: object) -> rcclient.RCClient:
        return rcclient.RCClient(
            "reader@localhost",
            "x",
            ["w@conference.localhost"],
            publisher_jid=publisher_jid,  # type: ignore[arg-type]
        )

    assert client(None).publisher_jids == frozenset()
    assert client("").publisher_jids == frozenset()  # as before: not checked
    assert client("RCBot@Localhost/res").publisher_jids == {"rcbot@localhost"}  # a str is one
    pair = client(x for x in ["rcbot@localhost", "rcbot2@localhost"])  # any iterable, read once
    assert pair.publisher_jids == frozenset({"rcbot@localhost", "rcbot2@localhost"})
    with pytest.raises(ValueError, match="not a JID"):
        client(["rcbot@localhost", ""])
    with pytest.raises(TypeError, match="expected JIDs"):
        client([None])
