"""`MemoryLink`: a `Link` in memory, to unit-test the room sink's logic without sockets.

Like httpx's ``MockTransport``: the sink under test is the real one; only
the stream is replaced. The test decides what the "server" does: whether a
room lets the bridge in (`refuse`), what a self-ping answers (`ping_answer`),
when the connection goes (`lose_connection`) and comes back (`come_online`),
which messages a room refuses (`refuse_message`). Everything written is kept
in `written`, in order, and the ids of what each room "received" (everything
written before the last answered self-ping) in `delivered`.

For a bridge pair, `peer_holds` makes another bridge the room's publisher (the
sink stands by), `peer_publishes` and `peer_leaves` are what it does, and
`archive` is what the room's archive shows of it.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict

from xmlrc.xmpp import PingResult, Verdict

from ..route import RoomSpec
from .link import EnterFailed, LinkEvents, Role, RoomRefused

__all__ = ["MemoryLink"]

_TO = re.compile(r'<message to="([^"]*)"')
_ID = re.compile(r'\bid="([^"]*)"')


class MemoryLink:
    """An in-memory stream for `RoomSink` (see the module docstring)."""

    def __init__(self, *, sender: str | None = None, auto_reconnect: bool = False) -> None:
        self._sender = sender
        #: Come back online by itself shortly after every loss, as a real session does.
        self.auto_reconnect = auto_reconnect
        #: Message ids that make the "server" close the stream when written.
        self.poison: set[str] = set()
        self._online = asyncio.Event()
        self._events: LinkEvents | None = None
        #: Every stanza written, in order, as (room, message id, text).
        self.written: list[tuple[str, str, str]] = []
        #: What each room holds: message ids written before a self-ping was answered.
        self.delivered: dict[str, list[str]] = defaultdict(list)
        self.entered: list[str] = []
        self.pings = 0
        self.drops: list[str] = []
        #: Room -> RoomRefused reason to raise on entry; room -> EnterFailed count.
        self.refusals: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        #: The next self-ping answers (FIFO), else "joined".
        self.ping_answers: list[PingResult] = []
        self._in_room: dict[str, list[str]] = defaultdict(list)  # written, not yet "arrived"
        #: Bridge pair: rooms whose publisher's nick another bridge holds; rooms where
        #: another standby wins the next take-over; each room's archived change ids.
        self.peer_held: set[str] = set()
        self.contested: set[str] = set()
        self.archive: dict[str, list[str]] = defaultdict(list)
        self.take_overs: list[str] = []
        #: Rooms whose publisher no longer answers pings; rooms where it was fenced out.
        self.unresponsive: set[str] = set()
        self.fenced: list[str] = []
        #: Whether the "server" answers a ping when a room does not (False: a dead link).
        self.server_alive = False

    # -- what a test does -----------------------------------------------------------------

    def come_online(self, resumed: bool = False) -> None:
        if self._online.is_set():
            return
        self._online.set()
        assert self._events is not None
        self._events.link_online(resumed)

    def lose_connection(self) -> None:
        """The stream breaks: what was written and not confirmed may be lost."""
        if not self._online.is_set():
            return
        self._online.clear()
        self._in_room.clear()
        assert self._events is not None
        self._events.link_offline()
        if self.auto_reconnect:
            asyncio.get_running_loop().call_later(0.001, self.come_online)

    def refuse(self, room: str, reason: str = "not_owner") -> None:
        self.refusals[room] = reason

    def refuse_message(self, room: str, message_id: str, condition: str) -> None:
        """The room bounces a message it had been written: it never holds it."""
        if message_id in self._in_room.get(room, []):
            self._in_room[room].remove(message_id)
        assert self._events is not None
        self._events.message_refused(room, message_id, condition)

    def kick(self, room: str) -> None:
        assert self._events is not None
        self._events.room_left(room)

    def peer_holds(self, room: str) -> None:
        self.peer_held.add(room)

    def peer_publishes(self, room: str, stable_ids: list[str]) -> None:
        self.archive[room].extend(stable_ids)
        assert self._events is not None
        self._events.published_by_peer(room, stable_ids)

    def peer_leaves(self, room: str) -> None:
        self.peer_held.discard(room)
        assert self._events is not None
        self._events.publisher_left(room)

    # -- the Link interface ---------------------------------------------------------------

    def bind(self, events: LinkEvents) -> None:
        self._events = events

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def sender(self) -> str | None:
        return self._sender

    async def wait_online(self) -> None:
        await self._online.wait()

    def delay(self, size: int) -> float:
        return 0.0

    def write(self, texts: list[str]) -> None:
        if not self.online:
            raise ConnectionError("write while offline")
        for text in texts:
            room_match, id_match = _TO.search(text), _ID.search(text)
            assert room_match is not None and id_match is not None
            room, message_id = room_match.group(1), id_match.group(1)
            self.written.append((room, message_id, text))
            self._in_room[room].append(message_id)
            if message_id in self.poison:  # the server closes the stream on this one
                asyncio.get_running_loop().call_soon(self.lose_connection)
                return

    async def enter(self, room: RoomSpec) -> Role:
        await asyncio.sleep(0)
        if room.jid in self.refusals:
            raise RoomRefused(room.jid, self.refusals[room.jid], "refused by the test")
        if self.failures.get(room.jid, 0) > 0:
            self.failures[room.jid] -= 1
            raise EnterFailed(f"{room.jid}: failing on purpose")
        self.entered.append(room.jid)
        return "standby" if room.jid in self.peer_held else "active"

    async def take_over(self, room: RoomSpec) -> bool:
        await asyncio.sleep(0)
        if room.jid in self.contested:
            self.contested.discard(room.jid)
            self.peer_held.add(room.jid)
            return False
        self.take_overs.append(room.jid)
        return True

    async def published_recently(self, room: str, limit: int) -> list[str]:
        await asyncio.sleep(0)
        return self.archive[room][-limit:]

    async def publisher_answers(self, room: str, timeout: float) -> bool:
        await asyncio.sleep(0)
        return room not in self.unresponsive

    async def fence(self, room: str) -> bool:
        await asyncio.sleep(0)
        self.fenced.append(room)
        self.unresponsive.discard(room)
        self.peer_leaves(room)  # the server removes the banned occupant
        return True

    async def reconfigure(self, room: RoomSpec) -> None:
        await asyncio.sleep(0)

    async def self_ping(self, room: str) -> PingResult:
        await asyncio.sleep(0)
        self.pings += 1
        answer = self.ping_answers.pop(0) if self.ping_answers else PingResult(Verdict.JOINED)
        if answer.verdict is Verdict.JOINED:
            arrived = self._in_room.pop(room, [])
            self.delivered[room].extend(arrived)
            self.archive[room].extend(arrived)
        return answer

    def leave(self, room: str) -> None:
        self._in_room.pop(room, None)

    async def server_answers(self) -> bool:
        await asyncio.sleep(0)
        return self.server_alive

    def drop(self, reason: str) -> None:
        self.drops.append(reason)
        if self.online:
            self.lose_connection()
