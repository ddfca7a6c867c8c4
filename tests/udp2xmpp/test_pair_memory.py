"""A bridge pair's standby logic through an in-memory link: it sends nothing while the
other bridge publishes, forgets what that one posts, takes over when it leaves and
sends exactly the rest, in order. The same against real servers: test_pair.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.udp2xmpp.test_sink_memory import OTHER, ROOM, item
from udp2xmpp.sink.memory import MemoryLink
from udp2xmpp.sink.outgoing import RoomQueue
from udp2xmpp.sink.rooms import RoomSink


@pytest.fixture
async def standby() -> AsyncIterator[Callable[..., tuple[RoomSink, MemoryLink]]]:
    made: list[RoomSink] = []

    def make(*rooms: str, **options: Any) -> tuple[RoomSink, MemoryLink]:
        link = MemoryLink()
        for room in rooms or (ROOM.jid,):
            link.peer_holds(room)
        sink = RoomSink(link, self_ping_interval=5.0, **options)
        made.append(sink)
        link.come_online()
        return sink, link

    yield make
    for sink in made:
        await sink.stop()


def test_forgetting_drops_the_published_and_what_the_publisher_went_past() -> None:
    queue = RoomQueue()
    queue.queue.extend([item(1), item(2, "dewiki"), item(3), item(4), item(5)])
    published, passed = queue.forget_published(["enwiki/3", "enwiki/9"])
    assert [i.stable_id for i in published] == ["enwiki/3"]
    assert [i.stable_id for i in passed] == ["enwiki/1"]  # dewiki's change stays
    assert [i.stable_id for i in queue.queue] == ["dewiki/2", "enwiki/4", "enwiki/5"]
    # enwiki/9 was posted before this bridge received it: dropped when it comes.
    assert queue.seen("enwiki/9") and not queue.seen("enwiki/9")
    assert not queue.seen("enwiki/4")


async def test_a_standby_sends_nothing_and_keeps_only_what_was_not_published(
    standby: Any,
) -> None:
    sink, link = standby()
    for rcid in range(1, 6):
        assert sink.submit(ROOM, item(rcid))
    await wait_for(lambda: sink.standby_rooms() == [ROOM.jid], 5, "standing by")
    link.peer_publishes(ROOM.jid, ["enwiki/1", "enwiki/2", "enwiki/3"])
    assert sink.pending == 2 and sink.stats.published_by_peer == 3
    assert link.written == []
    link.peer_publishes(ROOM.jid, ["enwiki/6"])  # not received here yet
    assert sink.submit(ROOM, item(6))  # accepted, and dropped as already published
    assert sink.pending == 2 and sink.stats.published_by_peer == 4
    assert link.written == [] and sink.stats.published == 0


async def test_when_the_publisher_leaves_the_standby_sends_the_rest_once_in_order(
    standby: Any,
) -> None:
    sink, link = standby()
    for rcid in range(1, 9):
        sink.submit(ROOM, item(rcid))
    await wait_for(lambda: sink.standby_rooms() == [ROOM.jid], 5, "standing by")
    link.peer_publishes(ROOM.jid, ["enwiki/1", "enwiki/2", "enwiki/3"])
    # The publisher posted 4 and 5 while this bridge was not looking: the archive has
    # them, and the take-over reads it.
    link.archive[ROOM.jid].extend(["enwiki/4", "enwiki/5"])
    link.peer_leaves(ROOM.jid)
    await wait_for(lambda: sink.stats.confirmed == 3, 5, "the rest confirmed")
    assert link.take_overs == [ROOM.jid] and sink.stats.takeovers == 1
    assert link.delivered[ROOM.jid] == ["enwiki/6", "enwiki/7", "enwiki/8"]
    assert sink.standby_rooms() == [] and sink.pending == 0 and sink.queued_bytes == 0
    sink.submit(ROOM, item(9))  # and on, as the publisher
    await wait_for(lambda: link.delivered[ROOM.jid][-1:] == ["enwiki/9"], 5, "live again")
    assert sink.stats.passed_by_peer == 0


async def test_a_lost_race_for_the_nick_means_standing_by_again(standby: Any) -> None:
    sink, link = standby()
    sink.submit(ROOM, item(1))
    await wait_for(lambda: sink.standby_rooms() == [ROOM.jid], 5, "standing by")
    link.contested.add(ROOM.jid)  # a third bridge gets the nick first
    link.peer_leaves(ROOM.jid)
    await wait_for(lambda: not link.contested, 5, "the race")
    assert sink.standby_rooms() == [ROOM.jid] and link.written == []
    assert sink.stats.takeovers == 0 and sink.pending == 1


async def test_standing_by_is_per_room(standby: Any) -> None:
    sink, link = standby(ROOM.jid)
    sink.submit(ROOM, item(1))
    sink.submit(OTHER, item(1, "dewiki"))
    await wait_for(lambda: link.delivered[OTHER.jid] == ["dewiki/1"], 5, "the other room")
    assert sink.standby_rooms() == [ROOM.jid]
    assert all(room != ROOM.jid for room, _id, _text in link.written)


async def test_a_publisher_that_stops_answering_is_fenced_out_and_replaced(
    standby: Any,
) -> None:
    sink, link = standby(pair_check_interval=0.05, pair_check_misses=2)
    sink.submit(ROOM, item(1))
    await wait_for(lambda: sink.standby_rooms() == [ROOM.jid], 5, "standing by")
    await asyncio.sleep(0.2)  # pings answered: nothing happens
    assert link.fenced == [] and link.written == []
    link.unresponsive.add(ROOM.jid)  # its machine is gone; the server still lists it
    await wait_for(lambda: link.delivered[ROOM.jid] == ["enwiki/1"], 5, "the take-over")
    assert link.fenced == [ROOM.jid] and sink.stats.fenced == 1 and sink.stats.takeovers == 1
