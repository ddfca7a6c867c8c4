"""Per-source rate limit with a penalty box (``udp.rate_limit``). Pure: the caller passes the clock.

Each source address has a token bucket: `burst` tokens, refilled at `rate`
per second, one spent per datagram. A source that finds its bucket empty is
put in the penalty box: everything it sends is ignored for `penalty` seconds,
after which it starts again with the tokens it earned meanwhile. The table
of sources is bounded (`max_sources`, least recently seen evicted), so a
stream of spoofed addresses costs memory only up to that bound.
"""

from __future__ import annotations

from collections import OrderedDict

from ..config import RateLimitSettings, settings_default

#: `SourceRateLimiter.check` answers.
ALLOW = 0
PENALIZED = 1  # over its budget just now: ignored from now on, for `penalty` seconds
IN_PENALTY = 2  # still in the penalty box
#: A token, less float rounding: a source sending exactly at its rate is within it.
_ONE = 1.0 - 1e-9


class SourceRateLimiter:
    """Token buckets per source address, and the penalty box (see the module)."""

    __slots__ = ("_table", "burst", "evictions", "max_sources", "penalties", "penalty", "rate")

    def __init__(
        self,
        rate: float,
        burst: float,
        penalty: float,
        *,
        max_sources: int = settings_default(RateLimitSettings, "max_sources"),
    ) -> None:
        if rate <= 0 or burst < 1 or penalty < 0 or max_sources < 1:
            raise ValueError("need rate > 0, burst >= 1, penalty >= 0, max_sources >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.penalty = float(penalty)
        self.max_sources = max_sources
        #: source -> [tokens, time of the last update, end of its penalty]
        self._table: OrderedDict[str, list[float]] = OrderedDict()
        #: Times a source was put in the penalty box, and sources forgotten for room.
        self.penalties = 0
        self.evictions = 0

    def check(self, source: str, now: float) -> int:
        """Spend one token of `source` at (monotonic) time `now`: ALLOW, PENALIZED or IN_PENALTY."""
        table = self._table
        state = table.get(source)
        if state is None:
            if len(table) >= self.max_sources:
                table.popitem(last=False)
                self.evictions += 1
            table[source] = [self.burst - 1.0, now, 0.0]
            return ALLOW
        table.move_to_end(source)
        if now < state[2]:
            return IN_PENALTY
        tokens = state[0] + (now - state[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        state[1] = now
        if tokens >= _ONE:
            state[0] = tokens - 1.0
            return ALLOW
        state[0] = tokens
        state[2] = now + self.penalty
        self.penalties += 1
        return PENALIZED

    def penalized(self, source: str, now: float) -> bool:
        """Whether `source` is in the penalty box at `now`; spends nothing."""
        state = self._table.get(source)
        return state is not None and now < state[2]

    def in_penalty(self, now: float) -> list[str]:
        """The sources in the penalty box at `now` (for operators; not for the hot path)."""
        return [source for source, state in self._table.items() if now < state[2]]

    def __len__(self) -> int:
        return len(self._table)
