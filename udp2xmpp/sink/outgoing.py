"""One room's changes on their way out: queued, sent, confirmed; pure bookkeeping.

A change is *queued* until its room's sender writes it, then *unconfirmed*
until a self-ping of the room comes back (the server handles one stream in
order, so the answer proves every earlier message reached the room). On a
connection loss the unconfirmed go back to the head of the queue, oldest
first, and count one loss each; a change that was outstanding at two
consecutive losses (its own message may be what makes the server close the
stream) is set aside instead of resent at the head forever. After a loss,
changes that were outstanding are resent one at a time, each confirmed
before the next, so only the culprit is ever set aside.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from xmlrc.wire import RecentChange

__all__ = ["MAX_LOSSES", "SEEN_PUBLISHED", "Outgoing", "RoomQueue"]

#: A change outstanding at this many consecutive connection losses is dead-lettered.
MAX_LOSSES = 2
#: Stable ids a standby remembers having seen the active bridge publish before it
#: received them itself (so they are dropped when they arrive).
SEEN_PUBLISHED = 10_000


@dataclass(slots=True, eq=False)
class Outgoing:
    """A change for one room with its pre-built payload (shared by all its rooms)."""

    change: RecentChange
    #: ``<body>`` and ``<rc>`` text (`stanza.payload_text`), and its UTF-8 size.
    payload: str
    size: int
    #: Connection losses while this was sent and unconfirmed, since its last confirmation.
    losses: int = 0

    @property
    def stable_id(self) -> str:
        return self.change.stable_id


@dataclass(eq=False)
class RoomQueue:
    """Queued and unconfirmed changes of one room (see the module docstring)."""

    queue: deque[Outgoing] = field(default_factory=deque)
    #: Sent but not yet confirmed, with the sequence number of the write that sent each.
    unconfirmed: deque[tuple[int, Outgoing]] = field(default_factory=deque)
    sent_seq: int = 0
    #: Bridge pair: ids published in the room by the other bridge that this one had
    #: not received yet (oldest first, at most `SEEN_PUBLISHED`).
    published_elsewhere: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self.queue) + len(self.unconfirmed)

    @property
    def probing(self) -> bool:
        """The next change was outstanding at a loss: send it alone and confirm it first."""
        return bool(self.queue) and self.queue[0].losses > 0

    def mark_sent(self, items: list[Outgoing]) -> int:
        """`items` went out in one message; returns the write's sequence number."""
        self.sent_seq += 1
        for item in items:
            self.unconfirmed.append((self.sent_seq, item))
        return self.sent_seq

    def confirm_through(self, seq: int) -> list[Outgoing]:
        """Everything sent up to write `seq` reached the room; returns those changes."""
        done: list[Outgoing] = []
        while self.unconfirmed and self.unconfirmed[0][0] <= seq:
            done.append(self.unconfirmed.popleft()[1])
        return done

    def requeue_unconfirmed(self, *, lost: bool) -> tuple[int, list[Outgoing]]:
        """Put what was sent but never confirmed back at the head, oldest first.

        ``lost``: the connection went (each counts a loss); False for a room that
        only said we left it. Returns (how many were requeued, the dead-lettered).
        """
        requeued = 0
        dead: list[Outgoing] = []
        while self.unconfirmed:
            item = self.unconfirmed.pop()[1]
            if lost:
                item.losses += 1
                if item.losses >= MAX_LOSSES:
                    dead.append(item)
                    continue
            self.queue.appendleft(item)
            requeued += 1
        dead.reverse()
        return requeued, dead

    def take_unconfirmed(self, message_id: str) -> list[Outgoing]:
        """Remove and return the unconfirmed changes a message carried (errors only).

        A message id is a change's stable id, or ``first-id+count`` for a message
        carrying several changes (sent together, so adjacent here).
        """
        first, plus, count_text = message_id.rpartition("+")
        if plus and count_text.isdigit():
            stable_id, count = first, int(count_text)
        else:
            stable_id, count = message_id, 1
        for index, (_seq, item) in enumerate(self.unconfirmed):
            if item.stable_id == stable_id:
                end = min(index + count, len(self.unconfirmed))
                taken = [self.unconfirmed[n][1] for n in range(index, end)]
                for _ in taken:
                    del self.unconfirmed[index]
                return taken
        return []

    def forget_published(self, stable_ids: list[str]) -> tuple[list[Outgoing], list[Outgoing]]:
        """The other bridge of a pair published `stable_ids` in the room (in that order).

        Each held change with one of those ids is dropped, and so is every change
        of the same wiki queued before it: the other bridge has gone past it (it
        published it before this one was looking, or never received it). An id not
        held yet is remembered, and the change dropped when it arrives (`seen`).
        Returns (the published changes dropped, the passed-over ones dropped).
        """
        published: list[Outgoing] = []
        passed: list[Outgoing] = []
        for stable_id in stable_ids:
            index = next(
                (n for n, item in enumerate(self.queue) if item.stable_id == stable_id), None
            )
            if index is None:
                self.published_elsewhere[stable_id] = None
                while len(self.published_elsewhere) > SEEN_PUBLISHED:
                    self.published_elsewhere.popitem(last=False)
                continue
            if index == 0:  # the usual case: the standby got it first, in the same order
                published.append(self.queue.popleft())
                continue
            wiki = self.queue[index].change.wiki
            kept: deque[Outgoing] = deque()
            for n, item in enumerate(self.queue):
                if n < index and item.change.wiki == wiki:
                    passed.append(item)
                elif n == index:
                    published.append(item)
                else:
                    kept.append(item)
            self.queue = kept
        return published, passed

    def seen(self, stable_id: str) -> bool:
        """Whether the other bridge of a pair already published this change here."""
        if stable_id in self.published_elsewhere:
            del self.published_elsewhere[stable_id]
            return True
        return False

    def clear(self) -> list[Outgoing]:
        """Empty the room (it is refused); returns what it held."""
        held = [item for _seq, item in self.unconfirmed] + list(self.queue)
        self.unconfirmed.clear()
        self.queue.clear()
        return held
