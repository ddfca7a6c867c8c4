"""The room sink's logic through an in-memory link: queueing, confirmation, resend,
dead letters, refusals and bounds, with no socket (as httpx tests through MockTransport).
The same paths against a real Prosody are in test_xmpp_side.py and test_room_ownership.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from udp2xmpp.route import RoomSpec
from udp2xmpp.sink.memory import MemoryLink
from udp2xmpp.sink.outgoing import Outgoing
from udp2xmpp.sink.rooms import RoomChannel, RoomSink
from udp2xmpp.sink.stanza import payload_text
from xmlrc.wire import RecentChange
from xmlrc.xmpp import PingResult, Verdict

ROOM = RoomSpec("enwiki@conference.localhost", "enwiki", "Recent changes of enwiki")
OTHER = RoomSpec("dewiki@conference.localhost", "dewiki", "Recent changes of dewiki")


def item(rcid: int, wiki: str = "enwiki", comment: str = "") -> Outgoing:
    change = RecentChange(
        wiki=wiki,
        type="edit",
        ns=0,
        title=f"Page {rcid}",
        user="Alice",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        rcid=rcid,
        comment=comment,
    )
    payload = payload_text(change)
    return Outgoing(change, payload, len(payload.encode()))


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., tuple[RoomSink, MemoryLink]]]:
    made: list[RoomSink] = []

    def make(link: MemoryLink | None = None, **options: Any) -> tuple[RoomSink, MemoryLink]:
        link = link or MemoryLink()
        options.setdefault("self_ping_interval", 5.0)
        sink = RoomSink(link, **options)
        made.append(sink)
        return sink, link

    yield make
    for sink in made:
        await sink.stop()


async def test_changes_are_written_in_order_and_confirmed(make_sink: Any) -> None:
    sink, link = make_sink()
    link.come_online()
    for rcid in range(1, 6):
        assert sink.submit(ROOM, item(rcid))
    await wait_for(lambda: sink.stats.confirmed == 5, 5, "confirmation")
    assert link.delivered[ROOM.jid] == [f"enwiki/{n}" for n in range(1, 6)]
    assert sink.stats.published == 5
    assert sink.pending == 0 and sink.queued_bytes == 0


async def test_a_lost_connection_resends_what_was_unconfirmed(make_sink: Any) -> None:
    sink, link = make_sink()
    link.come_online()
    link.ping_answers = [PingResult(Verdict.UNDECIDED, "remote-server-timeout")] * 3
    for rcid in range(1, 4):
        sink.submit(ROOM, item(rcid))
    await wait_for(lambda: sink.stats.published == 3, 5, "written")
    link.lose_connection()  # nothing was confirmed: all three must go again
    assert sink.stats.resent == 3
    link.come_online()
    await wait_for(lambda: sink.stats.confirmed == 3, 10, "confirmation")
    assert link.delivered[ROOM.jid] == ["enwiki/1", "enwiki/2", "enwiki/3"]


async def test_a_poisonous_message_is_set_aside_alone(make_sink: Any, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    sink, link = make_sink(MemoryLink(auto_reconnect=True), dead_letter_file=str(dead))
    link.poison = {"enwiki/3"}  # writing it makes the server close the stream, every time
    link.come_online()
    for rcid in range(1, 8):
        sink.submit(ROOM, item(rcid))
    await wait_for(lambda: sink.stats.confirmed == 6, 10, "the other six confirmed")
    assert sink.stats.dropped_dead_letter == 1
    assert link.delivered[ROOM.jid] == [f"enwiki/{n}" for n in (1, 2, 4, 5, 6, 7)]
    (record,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert record["room"] == ROOM.jid and record["change"]["id"] == 3
    assert sink.pending == 0 and sink.queued_bytes == 0


async def test_a_refused_room_publishes_nothing_and_says_so(make_sink: Any) -> None:
    refused: list[RoomChannel] = []
    sink, link = make_sink(on_refused=refused.append)
    link.refuse(ROOM.jid, "not_owner")
    link.come_online()
    sink.submit(ROOM, item(1))
    sink.submit(OTHER, item(1, wiki="dewiki"))
    await wait_for(lambda: bool(refused), 5, "the refusal")
    await wait_for(lambda: sink.stats.confirmed == 1, 5, "the other room")
    assert sink.refused_rooms() == {ROOM.jid: "not_owner"}
    assert not sink.submit(ROOM, item(2))
    assert sink.stats.dropped_room_not_ours == 2
    assert [room for room, _id, _text in link.written] == [OTHER.jid]
    assert refused[0].spec == ROOM and not refused[0].static


async def test_a_taken_nick_is_counted_apart(make_sink: Any) -> None:
    sink, link = make_sink()
    link.refuse(ROOM.jid, "nick_taken")
    link.come_online()
    sink.open_room(ROOM)
    await wait_for(lambda: sink.refused_rooms() == {ROOM.jid: "nick_taken"}, 5, "the refusal")
    assert sink.stats.nick_conflicts == 1


async def test_queues_are_bounded_per_room_and_in_total(make_sink: Any) -> None:
    one = item(1)
    sink, link = make_sink(queue_size=3, max_queued_bytes=one.size * 5)
    for rcid in range(1, 6):  # offline: everything waits
        sink.submit(ROOM, item(rcid))
    assert sink.stats.dropped_overflow == 2  # the per-room bound: the oldest go
    assert sink.queue_depths() == {ROOM.jid: 3}
    assert sink.submit(OTHER, item(1, wiki="dewiki"))
    assert sink.submit(OTHER, item(2, wiki="dewiki"))
    assert not sink.submit(OTHER, item(3, wiki="dewiki"))  # the total bound: the newest is refused
    assert sink.stats.dropped_memory == 1
    link.come_online()
    await wait_for(lambda: sink.stats.confirmed == 5, 5, "confirmation")
    assert link.delivered[ROOM.jid] == ["enwiki/3", "enwiki/4", "enwiki/5"]


async def test_a_room_that_forgot_us_is_rejoined_and_sent_again(make_sink: Any) -> None:
    sink, link = make_sink()
    link.ping_answers = [PingResult(Verdict.NOT_JOINED, "not-acceptable")]
    link.come_online()
    sink.submit(ROOM, item(1))
    await wait_for(lambda: sink.stats.confirmed == 1, 5, "confirmation")
    assert link.entered == [ROOM.jid, ROOM.jid]
    assert [mid for _room, mid, _t in link.written] == ["enwiki/1", "enwiki/1"]
    assert sink.stats.self_ping_failures == 1


async def test_an_unanswered_self_ping_drops_the_connection(make_sink: Any) -> None:
    sink, link = make_sink(MemoryLink(auto_reconnect=True))
    link.ping_answers = [PingResult(Verdict.UNDECIDED, None, timed_out=True)]
    link.come_online()
    sink.submit(ROOM, item(1))
    await wait_for(lambda: sink.stats.confirmed == 1, 5, "confirmation after reconnecting")
    assert len(link.drops) == 1


async def test_a_room_that_does_not_answer_while_the_server_does_is_rejoined_alone(
    make_sink: Any,
) -> None:
    """On a cluster the node hosting one room may hang: that room is rejoined, its
    unconfirmed changes resent, and the connection (and the other rooms) kept."""
    sink, link = make_sink()
    link.server_alive = True
    link.come_online()
    sink.submit(OTHER, item(1, "dewiki"))
    await wait_for(lambda: sink.stats.confirmed == 1, 5, "the other room confirmed")
    link.ping_answers = [PingResult(Verdict.UNDECIDED, None, timed_out=True)]
    sink.submit(ROOM, item(1))
    await wait_for(lambda: sink.stats.confirmed == 2, 5, "confirmation after rejoining")
    assert link.drops == [] and link.entered.count(ROOM.jid) == 2
    assert link.entered.count(OTHER.jid) == 1
    assert [mid for room, mid, _t in link.written if room == ROOM.jid] == ["enwiki/1"] * 2


async def test_a_stale_verdict_does_not_drop_the_next_connection(make_sink: Any) -> None:
    """Two rooms' self-pings time out on a dead stream: the first drops it; the second's
    verdict, about the same dead stream, must not drop the new one (found on a cluster
    with a hung node: 30 s more outage and two changes dead-lettered)."""
    sink, link = make_sink(MemoryLink(auto_reconnect=True))
    link.come_online()
    sink.submit(ROOM, item(1))
    sink.submit(OTHER, item(1, "dewiki"))
    await wait_for(lambda: sink.stats.confirmed == 2, 5, "both rooms confirmed")
    link.ping_answers = [PingResult(Verdict.UNDECIDED, None, timed_out=True)] * 2
    sink.submit(ROOM, item(2))
    sink.submit(OTHER, item(2, "dewiki"))
    await wait_for(lambda: sink.stats.confirmed == 4, 5, "confirmation after reconnecting")
    assert len(link.drops) == 1 and sink.stats.dropped_dead_letter == 0


async def test_a_message_refused_for_good_is_counted_not_resent(make_sink: Any) -> None:
    sink, link = make_sink()
    link.ping_answers = [PingResult(Verdict.UNDECIDED, "remote-server-timeout")]
    link.come_online()
    sink.submit(ROOM, item(1))
    sink.submit(ROOM, item(2))
    await wait_for(lambda: sink.stats.published == 2, 5, "written")
    link.refuse_message(ROOM.jid, "enwiki/1", "forbidden")
    link.refuse_message(ROOM.jid, "enwiki/2", "not-acceptable")  # "not in the room": again
    await wait_for(lambda: sink.stats.confirmed == 1, 5, "the resend confirmed")
    assert sink.stats.dropped_refused == 1
    assert link.delivered[ROOM.jid] == ["enwiki/2"]


async def test_batches_stay_under_the_stanza_limit(make_sink: Any) -> None:
    big = [item(n, comment="x" * 3000) for n in range(1, 7)]
    sink, link = make_sink(changes_per_stanza=10, max_stanza_bytes=big[0].size * 2 + 100)
    for one in big:  # queued while offline, so they would share messages
        sink.submit(ROOM, one)
    link.come_online()
    await wait_for(lambda: sink.stats.confirmed == 6, 5, "confirmation")
    assert all(len(text.encode()) <= big[0].size * 2 + 400 for _r, _i, text in link.written)
    assert len(link.written) == 3  # two changes a message, never three


async def test_stop_cancels_every_room_task(make_sink: Any) -> None:
    sink, link = make_sink()
    link.come_online()
    for n in range(20):
        sink.open_room(RoomSpec(f"room{n}@conference.localhost", "r", "d"))
    await asyncio.sleep(0.05)
    before = len(asyncio.all_tasks())
    await sink.stop()
    assert len(asyncio.all_tasks()) <= before - 40


async def test_a_write_on_a_closed_stream_loses_nothing(make_sink: Any) -> None:
    """The socket can go between the online check and the write: the batch goes back."""
    sink, link = make_sink()
    link.come_online()
    broken = True
    real_write = link.write

    def write(texts: list[str]) -> None:
        nonlocal broken
        if broken:
            broken = False
            raise ConnectionError("closed")
        real_write(texts)

    link.write = write  # type: ignore[method-assign]
    for rcid in range(1, 4):
        sink.submit(ROOM, item(rcid))
    await wait_for(lambda: sink.stats.confirmed == 3, 5, "confirmation")
    assert link.delivered[ROOM.jid] == ["enwiki/1", "enwiki/2", "enwiki/3"]
