"""Per-user rate and volume limits, and digests. Pure: the caller passes the clock.

Each user has a token bucket of `burst` notifications refilled at
`rate_per_minute`. While it has a token a change is sent at once. When it
runs dry the user goes into digest mode: changes are gathered (the first
`digest_max_items` listed, the rest counted) and sent as one message
`digest_interval` seconds after the first one, the batching the Wikimedia
push service does. While a digest is pending, new changes join it, so they
stay in order. With `jitter`, each digest waits a uniformly random extra
0 to `jitter` seconds (drawn from the injected `random`), as that service
randomises its batch delay: when a digest arrives then says less about when
the on-wiki actions in it happened.

The volume limit: at most `daily_limit` changes a user in a rolling day
(sent at once or listed in a digest). Past it changes are counted, not
sent; the next digest says so once, then they are only counted until the
day is over.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

DAY = 86400.0
#: A token, less float rounding.
_ONE = 1.0 - 1e-9
#: The jitter's source: the OS's, so an observer cannot predict it from earlier digests.
_system_random = _random.SystemRandom()


@dataclass
class Digest(Generic[T]):
    """Changes gathered for one user, to go out as one message."""

    jid: str
    started: float
    due: float
    items: list[T] = field(default_factory=list)
    #: Gathered beyond the listed items.
    more: int = 0
    #: Not sent at all: over the daily limit.
    over_volume: int = 0

    @property
    def total(self) -> int:
        return len(self.items) + self.more


@dataclass
class _User:
    tokens: float
    last: float
    day_start: float
    day_count: int = 0
    #: The daily limit was reached and the user was told (in a digest) this day.
    told: bool = False


@dataclass
class LimitStats:
    """The limiter's counters: sent at once, put in digests, over the daily volume, digests."""

    sent: int = 0
    digested: int = 0
    over_volume: int = 0
    digests: int = 0


class DeliveryLimiter(Generic[T]):
    """Decides per user whether a change is sent now, goes in a digest, or is only counted."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        digest_interval: float,
        digest_max_items: int,
        daily_limit: int,
        *,
        jitter: float = 0.0,
        random: Callable[[], float] = _system_random.random,
    ) -> None:
        if rate_per_minute <= 0 or burst < 1 or digest_interval <= 0 or daily_limit < 1:
            raise ValueError("need rate > 0, burst >= 1, interval > 0, daily_limit >= 1")
        if jitter < 0:
            raise ValueError("need jitter >= 0")
        self.jitter = jitter
        #: A uniform draw in [0, 1).
        self.random = random
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.interval = digest_interval
        self.max_items = digest_max_items
        self.daily_limit = daily_limit
        self.stats = LimitStats()
        self._users: dict[str, _User] = {}
        self._pending: dict[str, Digest[T]] = {}

    def offer(self, jid: str, item: T, now: float) -> bool:
        """True: send `item` now (a token was spent). False: it went into a digest, or over
        the daily limit it was only counted."""
        user = self._users.get(jid)
        if user is None:
            user = self._users[jid] = _User(tokens=self.burst, last=now, day_start=now)
        else:
            user.tokens = min(self.burst, user.tokens + (now - user.last) * self.rate)
            user.last = now
            if now - user.day_start >= DAY:
                user.day_start, user.day_count, user.told = now, 0, False
        pending = self._pending.get(jid)
        if user.day_count >= self.daily_limit:
            self.stats.over_volume += 1
            if pending is None and not user.told:
                pending = self._start(jid, now)
            if pending is not None:
                pending.over_volume += 1
                user.told = True
            return False
        user.day_count += 1
        if pending is None and user.tokens >= _ONE:
            user.tokens -= 1.0
            self.stats.sent += 1
            return True
        if pending is None:
            pending = self._start(jid, now)
        if len(pending.items) < self.max_items:
            pending.items.append(item)
        else:
            pending.more += 1
        self.stats.digested += 1
        return False

    def due(self, now: float) -> list[Digest[T]]:
        """The digests whose time has come (removed from the pending ones)."""
        ready = [d for d in self._pending.values() if d.due <= now]
        for digest in ready:
            del self._pending[digest.jid]
        self.stats.digests += len(ready)
        return ready

    def next_due(self) -> float | None:
        return min((d.due for d in self._pending.values()), default=None)

    def flush_all(self) -> list[Digest[T]]:
        """Every pending digest, now (on shutdown)."""
        ready = list(self._pending.values())
        self._pending.clear()
        self.stats.digests += len(ready)
        return ready

    def forget(self, jid: str) -> None:
        """Drop what is known of `jid` (it has no subscription left)."""
        self._users.pop(jid, None)
        self._pending.pop(jid, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _start(self, jid: str, now: float) -> Digest[T]:
        delay = self.interval
        if self.jitter:
            delay += self.jitter * self.random()
        digest: Digest[T] = Digest(jid=jid, started=now, due=now + delay)
        self._pending[jid] = digest
        return digest


class BounceCounter:
    """Consecutive bounced notifications per JID; a sign of life starts the count over."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def bounced(self, jid: str) -> bool:
        """Count one bounce; True when `jid` has now reached the limit (and is forgotten)."""
        count = self._counts.get(jid, 0) + 1
        if count >= self.limit:
            self._counts.pop(jid, None)
            return True
        self._counts[jid] = count
        return False

    def alive(self, jid: str) -> None:
        self._counts.pop(jid, None)

    def __len__(self) -> int:
        return len(self._counts)
