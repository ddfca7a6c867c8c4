"""`RoomSink`: per-room queues drained into MUC rooms over one `Link`, nothing lost.

Per room it keeps a bounded queue (`outgoing.RoomQueue`), enters the room
(joined, owned, configured: see `udp2xmpp.sink.xmpp`) before the first
message, and writes one groupchat message per change (or a few, opt-in),
paced under the stream's budget.

Every change sent stays *unconfirmed* until an XEP-0410 self-ping of its
room comes back: the server handles one stream in order, so the answer
proves every earlier message reached the room (and its archive). If the
room says we left, or the connection goes, the unconfirmed go back to the
head of the queue and are sent again after the rejoin; clients drop the
rare duplicate by the stable id. A change outstanding at two consecutive
connection losses is dead-lettered (counted, logged, written to
``dead_letter_file``) so one poisonous message cannot keep every room down.

Bounds, so no input can exhaust the bridge: each room's queue
(``queue_size``, oldest dropped), all queues together (``max_queued_bytes``,
newest refused), changes in flight per room (``max_unconfirmed``), room
entries and pings in flight (the link's semaphore).

A bridge pair: where the other bridge holds the publisher's nick, this one
*stands by*: it queues every change as usual but sends none, and forgets each
change it sees the publisher post (with every change of the same wiki queued
before it, which the publisher has gone past). When the publisher leaves the
room, the standby takes its nick, forgets what the room's archive shows was
published meanwhile, and sends the rest, in order.

The logic is transport-independent: `XmppLink` is the real stream,
`MemoryLink` an in-memory one for unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xmlrc.tasks import Supervisor
from xmlrc.wire import RecentChange, change_to_json
from xmlrc.xmpp import Verdict

from ..config import DeliverySettings, XmppSettings, settings_default
from ..route import RoomSpec
from ..throttled_log import RateLimitedLog
from .link import EnterFailed, Link, RoomRefused
from .outgoing import Outgoing, RoomQueue
from .stanza import message_around

__all__ = ["RoomSink", "SinkStats"]

log = logging.getLogger(__name__)

#: Most stanzas written at once; bounds the time one room holds the loop.
_BATCH = 128


@dataclass
class SinkStats:
    """The sink's counters (plain integers; `/metrics` reads them when scraped)."""

    published: int = 0
    confirmed: int = 0
    resent: int = 0
    dropped_overflow: int = 0
    #: Changes a room refused for good (an error other than "you are not in the room").
    dropped_refused: int = 0
    #: Changes for a room the bridge will not publish in (not its owner, misconfigured,
    #: its nick taken), and changes refused because every queue together was full.
    dropped_room_not_ours: int = 0
    dropped_memory: int = 0
    #: Changes outstanding at two consecutive connection losses, set aside.
    dropped_dead_letter: int = 0
    joins: int = 0
    join_failures: int = 0
    connections: int = 0
    self_ping_failures: int = 0
    nick_conflicts: int = 0
    #: Bridge pair: rooms taken over from the other bridge; changes it published
    #: (forgotten here), and changes it went past without publishing.
    takeovers: int = 0
    #: ... and times the publishing bridge stopped answering and was banned from a room.
    fenced: int = 0
    published_by_peer: int = 0
    passed_by_peer: int = 0


@dataclass(eq=False)
class RoomChannel:
    """One room: its queue, its state, the events its two tasks wait on."""

    spec: RoomSpec
    static: bool
    pending: RoomQueue = field(default_factory=RoomQueue)
    joined: bool = False
    #: A bridge pair: the other bridge publishes here; `vacant`: it just left;
    #: when to ping it next, and how many pings in a row it left unanswered.
    standby: bool = False
    vacant: bool = False
    next_check: float = 0.0
    misses: int = 0
    #: Why the bridge will not publish here (``not_owner``, ``misconfigured``,
    #: ``nick_taken``), with the details; None while all is well.
    refused: str | None = None
    refused_detail: str = ""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent_since_ping: asyncio.Event = field(default_factory=asyncio.Event)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def jid(self) -> str:
        return self.spec.jid


class RoomSink:
    """Publishes changes into rooms over a `Link`; owns the room tasks."""

    def __init__(
        self,
        link: Link,
        *,
        queue_size: int = settings_default(DeliverySettings, "queue_size"),
        max_queued_bytes: int = settings_default(DeliverySettings, "max_queued_bytes"),
        max_unconfirmed: int = settings_default(DeliverySettings, "max_unconfirmed"),
        changes_per_stanza: int = settings_default(DeliverySettings, "changes_per_stanza"),
        max_stanza_bytes: int = settings_default(DeliverySettings, "max_stanza_bytes"),
        self_ping_interval: float = settings_default(XmppSettings, "self_ping_interval"),
        dead_letter_file: str | None = None,
        pair_check_interval: float = 5.0,
        pair_check_misses: int = 2,
        on_published: Callable[[RoomSpec, RecentChange], None] | None = None,
        on_refused: Callable[[RoomChannel], None] | None = None,
    ) -> None:
        self.link = link
        self.queue_size = queue_size
        self.max_queued_bytes = max_queued_bytes
        self.max_unconfirmed = max_unconfirmed
        self.changes_per_stanza = changes_per_stanza
        self.max_stanza_bytes = max_stanza_bytes
        self.self_ping_interval = self_ping_interval
        self.dead_letter_file = Path(dead_letter_file) if dead_letter_file else None
        self.pair_check_interval = pair_check_interval
        self.pair_check_misses = pair_check_misses
        self.stats = SinkStats()
        #: UTF-8 bytes of every payload queued or unconfirmed, all rooms together.
        self.queued_bytes = 0
        self._on_published = on_published
        self._on_refused = on_refused
        self._channels: dict[str, RoomChannel] = {}
        self._tasks = Supervisor()
        self._stopping = False
        self._log = RateLimitedLog(log)
        link.bind(self)

    # -- intake (never blocks) ----------------------------------------------------------

    def submit(self, room: RoomSpec, item: Outgoing) -> bool:
        """Queue `item` for `room`; False when it was dropped (counted)."""
        channel = self._channels.get(room.jid)
        if channel is None:
            channel = self.open_room(room, static=False)
        if channel.refused is not None:
            self.stats.dropped_room_not_ours += 1
            return False
        if channel.pending.seen(item.stable_id):  # the other bridge of a pair posted it
            self.stats.published_by_peer += 1
            return True
        if self.queued_bytes + item.size > self.max_queued_bytes:
            self.stats.dropped_memory += 1
            self._log.warning(
                "every queue together holds %d bytes: refused a change for %s",
                self.queued_bytes,
                room.jid,
            )
            return False
        queue = channel.pending.queue
        if len(queue) >= self.queue_size:
            oldest = queue.popleft()
            self.queued_bytes -= oldest.size
            self.stats.dropped_overflow += 1
            self._log.warning("queue of %s full: dropped its oldest change", room.jid)
        queue.append(item)
        self.queued_bytes += item.size
        channel.wake.set()
        return True

    def open_room(self, room: RoomSpec, *, static: bool = True) -> RoomChannel:
        """Enter `room` now, before its first change (``static``: the config names it).

        For a room already open with other settings (a reload changed its title,
        description or membership), apply the new settings to it.
        """
        channel = self._channels.get(room.jid)
        if channel is None:
            channel = RoomChannel(spec=room, static=static)
            self._channels[room.jid] = channel
            self._tasks.spawn(lambda: self._send_loop(channel), f"room {room.jid}")
            self._tasks.spawn(lambda: self._confirm_loop(channel), f"confirm {room.jid}")
            channel.wake.set()
        elif channel.spec != room:
            channel.spec = room
            if channel.joined:
                self._tasks.spawn(
                    lambda: self.link.reconfigure(room), f"reconfigure {room.jid}", restart=False
                )
        return channel

    def has_room(self, jid: str) -> bool:
        return jid in self._channels

    @property
    def dynamic_rooms(self) -> int:
        """Rooms opened for wikis the config does not name."""
        return sum(1 for channel in self._channels.values() if not channel.static)

    # -- state ----------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.link.online

    async def wait_online(self, timeout: float) -> None:
        await asyncio.wait_for(self.link.wait_online(), timeout)

    def joined_rooms(self) -> list[str]:
        return [jid for jid, channel in self._channels.items() if channel.joined]

    def standby_rooms(self) -> list[str]:
        """Rooms where the other bridge of a pair publishes and this one stands by."""
        return [jid for jid, ch in self._channels.items() if ch.joined and ch.standby]

    def refused_rooms(self) -> dict[str, str]:
        """Rooms the bridge will not publish in: JID -> reason."""
        return {jid: ch.refused for jid, ch in self._channels.items() if ch.refused is not None}

    def queue_depths(self) -> dict[str, int]:
        return {jid: len(ch.pending.queue) for jid, ch in self._channels.items()}

    @property
    def pending(self) -> int:
        """Changes queued, or sent but not yet confirmed."""
        return sum(len(ch.pending) for ch in self._channels.values())

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued change is sent and confirmed, or `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending and loop.time() < deadline:  # noqa: ASYNC110 - polls several rooms
            await asyncio.sleep(0.02)
        return self.pending == 0

    async def stop(self) -> None:
        """Cancel every room task and leave the rooms; never raises."""
        self._stopping = True
        await self._tasks.close()
        if self.link.online:
            for channel in self._channels.values():
                if channel.joined:
                    with contextlib.suppress(Exception):
                        self.link.leave(channel.jid)

    # -- link events ----------------------------------------------------------------------

    def link_online(self, resumed: bool) -> None:
        self.stats.connections += 1
        for channel in self._channels.values():
            channel.wake.set()

    def link_offline(self) -> None:
        """The connection is gone: nothing unconfirmed may be trusted to have arrived."""
        for channel in self._channels.values():
            channel.joined = False
            self._requeue(channel, lost=True)
            channel.wake.set()

    def room_left(self, room: str) -> None:
        channel = self._channels.get(room)
        if channel is not None and channel.joined and not self._stopping:
            self._log.warning("removed from %s (kicked or room destroyed): rejoining", room)
            channel.joined = False
            self._requeue(channel, lost=False)
            channel.wake.set()

    def publisher_left(self, room: str) -> None:
        channel = self._channels.get(room)
        if channel is not None and channel.standby and not self._stopping:
            log.warning("the publishing bridge left %s: taking over", room)
            channel.vacant = True
            channel.wake.set()

    def published_by_peer(self, room: str, stable_ids: list[str]) -> None:
        channel = self._channels.get(room)
        if channel is not None and channel.standby:
            self._forget(channel, stable_ids)

    def _forget(self, channel: RoomChannel, stable_ids: list[str]) -> None:
        published, passed = channel.pending.forget_published(stable_ids)
        for item in (*published, *passed):
            self.queued_bytes -= item.size
        self.stats.published_by_peer += len(published)
        if passed:
            self.stats.passed_by_peer += len(passed)
            self._log.warning(
                "the publishing bridge went past %d change(s) for %s it never posted "
                "(first: %s); not posting them out of order",
                len(passed),
                channel.jid,
                passed[0].stable_id,
            )

    def message_refused(self, room: str, message_id: str, condition: str) -> None:
        # Errors arrive before the answer to the next self-ping (one stream, in
        # order), so a refused change is still among the unconfirmed.
        channel = self._channels.get(room)
        if channel is None:
            return
        items = channel.pending.take_unconfirmed(message_id)
        if not items:
            return
        if condition in ("not-acceptable", "not-allowed", "item-not-found"):
            # "You are not in this room": send again after rejoining.
            channel.pending.queue.extendleft(reversed(items))
            self.stats.resent += len(items)
            if channel.joined:
                self._log.warning("%s says we are not in it (%s): rejoining", room, condition)
                channel.joined = False
                self._requeue(channel, lost=False)
                channel.wake.set()
        else:
            self.stats.dropped_refused += len(items)
            for item in items:
                self.queued_bytes -= item.size
            self._log.warning("%s refused %s: %s", room, message_id, condition)

    # -- per-room tasks ---------------------------------------------------------------------

    async def _send_loop(self, channel: RoomChannel) -> None:
        retry = 1.0
        while True:
            if channel.refused is not None:  # until a reload opens it anew (`reopen`)
                channel.wake.clear()
                await channel.wake.wait()
                continue
            if not self.link.online:
                await self.link.wait_online()
                continue
            if not channel.joined:
                try:
                    role = await self.link.enter(channel.spec)
                except RoomRefused as exc:
                    self._refuse(channel, exc)
                    continue
                except EnterFailed as exc:
                    self.stats.join_failures += 1
                    self._log.warning("%s; retrying in %.0f s", exc, retry)
                    await asyncio.sleep(retry * random.uniform(0.5, 1.5))
                    retry = min(retry * 2, 60.0)
                    continue
                retry = 1.0
                self.stats.joins += 1
                channel.joined = True
                channel.standby, channel.vacant = role == "standby", False
                channel.sent_since_ping.set()
                if channel.standby:
                    log.info("standing by in %s: the other bridge publishes there", channel.jid)
                    try:
                        await self._forget_archived(channel)
                    except EnterFailed as exc:  # what we read live still counts
                        self._log.warning("%s", exc)
                else:
                    log.info("joined %s", channel.jid)
                continue
            if channel.standby:
                await self._stand_by(channel)
                continue
            pending = channel.pending
            if not pending.queue:
                channel.wake.clear()
                await channel.wake.wait()
                continue
            # A change that was outstanding at a loss goes alone, once nothing else is
            # in flight, and is confirmed before the next: if it is what breaks the
            # stream, it alone is dead-lettered at the next loss.
            probing = pending.probing
            room_for = 1 if probing else self.max_unconfirmed - len(pending.unconfirmed)
            if room_for <= 0 or (probing and pending.unconfirmed):
                channel.confirmed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.confirmed.wait(), self.self_ping_interval)
                continue
            batch: list[str] = []
            sent: list[list[Outgoing]] = []
            group: list[Outgoing] = []
            group_size = 0
            wait = 0.0
            taken = 0
            while pending.queue and taken < min(_BATCH, room_for):
                item = pending.queue[0]
                # Several changes share a stanza only when they queued up anyway, and
                # only while the message stays under the server's stanza limit.
                if group and group_size + item.size > self.max_stanza_bytes:
                    batch.append(self._message(channel, group))
                    sent.append(group)
                    group, group_size = [], 0
                    continue
                wait = self.link.delay(item.size)
                if wait:
                    break
                pending.queue.popleft()
                taken += 1
                group.append(item)
                group_size += item.size
                if len(group) >= self.changes_per_stanza or not pending.queue or probing:
                    batch.append(self._message(channel, group))
                    sent.append(group)
                    group, group_size = [], 0
                    if probing:
                        break
            if group:
                batch.append(self._message(channel, group))
                sent.append(group)
            if batch:
                try:
                    self.link.write(batch)
                except ConnectionError:  # the stream went under us: nothing left
                    for items in reversed(sent):
                        pending.queue.extendleft(reversed(items))
                    await asyncio.sleep(0.05)
                    continue
                for items in sent:
                    pending.mark_sent(items)
                self._count_published(channel, sent)
                channel.sent_since_ping.set()
            await asyncio.sleep(wait)  # also lets intake, acks and other rooms run

    async def _stand_by(self, channel: RoomChannel) -> None:
        """One turn of standing by: take over, ping the publisher, or wait."""
        if channel.vacant:
            await self._take_over(channel)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < channel.next_check:
            channel.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.wake.wait(), channel.next_check - now)
            return
        channel.next_check = now + self.pair_check_interval
        # An answer later than the next ping is due counts as none.
        if await self.link.publisher_answers(channel.jid, self.pair_check_interval):
            channel.misses = 0
            return
        channel.misses += 1
        if channel.misses < self.pair_check_misses or not channel.standby:
            return
        channel.misses = 0
        self._log.error(
            "the publishing bridge in %s left %d pings unanswered: banning it from the "
            "room to take over (it is made an owner again after)",
            channel.jid,
            self.pair_check_misses,
        )
        if await self.link.fence(channel.jid):
            self.stats.fenced += 1

    async def _take_over(self, channel: RoomChannel) -> None:
        """The publisher left: take its nick, forget what it posted meanwhile, go on."""
        channel.vacant = False
        try:
            won = await self.link.take_over(channel.spec)
        except RoomRefused as exc:
            self._refuse(channel, exc)
            return
        except EnterFailed as exc:
            self._log.warning("%s: rejoining", exc)
            channel.joined = channel.standby = False
            return
        if not won:
            log.info("another bridge took over %s first: standing by", channel.jid)
            return
        try:
            await self._forget_archived(channel)
        except EnterFailed as exc:
            # Publishing without knowing what the archive holds could post a change
            # twice: hold the nick, and try the whole take-over again shortly.
            self._log.warning("%s: taking over again in 1 s", exc)
            channel.vacant = True
            await asyncio.sleep(1.0)
            return
        channel.standby = False
        self.stats.takeovers += 1
        log.warning(
            "took over publishing in %s: %d change(s) to send", channel.jid, len(channel.pending)
        )
        channel.sent_since_ping.set()

    async def _forget_archived(self, channel: RoomChannel) -> None:
        """Forget what the publisher posted while we were not looking (before we came
        in, between leaving and rejoining): the room's archive shows it, if it keeps one."""
        limit = len(channel.pending.queue) + 100
        self._forget(channel, await self.link.published_recently(channel.jid, limit))

    def _message(self, channel: RoomChannel, items: list[Outgoing]) -> str:
        return message_around(
            [item.payload for item in items],
            [item.stable_id for item in items],
            channel.jid,
            self.link.sender,
        )

    def _count_published(self, channel: RoomChannel, sent: list[list[Outgoing]]) -> None:
        hook = self._on_published
        count = 0
        for items in sent:
            count += len(items)
            if hook is not None:
                for item in items:
                    hook(channel.spec, item.change)
        self.stats.published += count

    async def _confirm_loop(self, channel: RoomChannel) -> None:
        """Confirm sent changes with self-pings; notice when we are out of the room."""
        while True:
            # Idle rooms are still pinged now and then (XEP-0410).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.sent_since_ping.wait(), self.self_ping_interval)
            if not (channel.joined and self.link.online):
                channel.sent_since_ping.clear()
                await asyncio.sleep(0.05)
                continue
            channel.sent_since_ping.clear()
            mark = channel.pending.sent_seq
            epoch = self.stats.connections
            result = await self.link.self_ping(channel.jid)
            if not channel.joined or self.stats.connections != epoch:
                continue  # the connection or the room went while we waited
            if result.verdict is Verdict.NOT_JOINED:
                self.stats.self_ping_failures += 1
                self._log.warning("no longer in %s (%s): rejoining", channel.jid, result.condition)
                channel.joined = False
                self._requeue(channel, lost=False)
                channel.wake.set()
                continue
            if result.verdict is Verdict.UNDECIDED:
                self.stats.self_ping_failures += 1
                answers = result.timed_out and await self.link.server_answers()
                if not channel.joined or self.stats.connections != epoch:
                    continue  # a verdict on a connection that is gone already
                if answers:
                    # The server is there; only the room is not (on a cluster its node
                    # may hang): rejoin it, and leave the other rooms alone.
                    self._log.warning(
                        "no answer to a self-ping of %s, though the server answers: rejoining it",
                        channel.jid,
                    )
                    if channel.joined:
                        channel.joined = False
                        self._requeue(channel, lost=False)
                        channel.wake.set()
                elif result.timed_out:
                    self.link.drop(f"no answer to a self-ping of {channel.jid}")
                    # The session notices a moment later: a self-ping sent meanwhile
                    # would go into the dead stream and hold this room's confirmations
                    # (and its probing sender) for a whole ping timeout.
                    for _ in range(200):  # at most 10 s: the session ends it sooner
                        if not (self.link.online and self.stats.connections == epoch):
                            break
                        await asyncio.sleep(0.05)
                else:  # the room's server is unreachable; nothing is confirmed: ask again
                    channel.sent_since_ping.set()
                    await asyncio.sleep(1.0)
                continue
            done = channel.pending.confirm_through(mark)
            for item in done:
                item.losses = 0
                self.queued_bytes -= item.size
            self.stats.confirmed += len(done)
            channel.confirmed.set()
            if not channel.pending.probing:
                # One ping covers everything sent meanwhile; a fifth of a second keeps
                # pings rare under a steady stream and confirmation prompt enough.
                await asyncio.sleep(0.2)

    # -- helpers ------------------------------------------------------------------------------

    def _requeue(self, channel: RoomChannel, *, lost: bool) -> None:
        requeued, dead = channel.pending.requeue_unconfirmed(lost=lost)
        self.stats.resent += requeued
        channel.confirmed.set()  # nothing in flight any more: a waiting sender may go on
        if dead:
            self._dead_letter(channel, dead)

    def _dead_letter(self, channel: RoomChannel, items: list[Outgoing]) -> None:
        self.stats.dropped_dead_letter += len(items)
        for item in items:
            self.queued_bytes -= item.size
            self._log.error(
                "set aside %s for %s: it was in flight at two connection losses in a row",
                item.stable_id,
                channel.jid,
            )
        if self.dead_letter_file is None:
            return
        try:
            with self.dead_letter_file.open("a", encoding="utf-8") as out:
                for item in items:
                    record = {"room": channel.jid, "change": change_to_json(item.change)}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
        except (OSError, ValueError) as exc:
            self._log.warning(
                "cannot write the dead-letter file %s: %s", self.dead_letter_file, exc
            )

    def _refuse(self, channel: RoomChannel, exc: RoomRefused) -> None:
        channel.refused = exc.reason
        channel.refused_detail = str(exc)
        if exc.reason == "nick_taken":
            self.stats.nick_conflicts += 1
        held = channel.pending.clear()
        for item in held:
            self.queued_bytes -= item.size
        self.stats.dropped_room_not_ours += len(held)
        self._log.error("not publishing in %s: %s", channel.jid, channel.refused_detail)
        with contextlib.suppress(Exception):
            self.link.leave(channel.jid)
        if self._on_refused is not None:
            self._on_refused(channel)

    def reopen(self, room: RoomSpec) -> None:
        """Try a refused room again (after a reload: the operator may have fixed it)."""
        channel = self._channels.get(room.jid)
        if channel is not None and channel.refused is not None:
            channel.refused = None
            channel.refused_detail = ""
            channel.spec = room
            channel.wake.set()
            channel.sent_since_ping.set()
