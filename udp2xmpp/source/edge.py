"""The bridge's edge: what happens to a datagram before it is decoded.

In order, each step cheaper than the next, so a flood is refused as early
as possible:

1. the source address must be in ``udp.allow`` (cached per address);
2. the source must be within its rate limit (token bucket, penalty box);
3. the signature, when there is one (or when one is required), must verify.

With ``udp.require_signature`` on, source addresses can be forged but
signatures cannot, so steps 2 and 3 change places for what they charge: only
*verified* datagrams (accepted signatures) spend the source's budget, and
only they can put it in the penalty box. Everything else (unsigned, forged,
stale, replayed) spends a separate budget of the same size, per source, in
its own bounded table. A junk flood sent from a signer's address therefore
empties the junk budget, not the signer's: its datagrams are dropped
(``rate_limited``, without a log line each) while the signer's keep flowing.
A source in the verified penalty box is dropped before its signature is
checked (only its own signed traffic put it there).

`EdgeGuard.admit` returns the payload to decode or a `Rejection` whose
reason is the counter label. It never raises and does not log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from xmlrc.wire import Rejection, RejectReason
from xmlrc.wire.signing import SignatureChecker

from ..config import UdpSettings
from .allow import SourceAllowlist
from .ratelimit import ALLOW, PENALIZED, SourceRateLimiter
from .replaystate import ReplayStateFile

#: Preallocated: a flood must not cost an allocation per refused datagram.
NOT_ALLOWED = Rejection(RejectReason.NOT_ALLOWED, "source address not in udp.allow")
IN_PENALTY_BOX = Rejection(RejectReason.RATE_LIMITED, "source in the penalty box")


class EdgeGuard:
    """Allowlist, rate limits and signatures, in that order (see the module)."""

    __slots__ = (
        "_junk_penalized",
        "_monotonic",
        "_penalized",
        "_wall",
        "allowlist",
        "limiter",
        "replay_state",
        "signatures",
        "unverified",
    )

    def __init__(
        self,
        allowlist: SourceAllowlist,
        limiter: SourceRateLimiter | None,
        signatures: SignatureChecker,
        *,
        unverified: SourceRateLimiter | None = None,
        replay_state: ReplayStateFile | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.allowlist = allowlist
        self.limiter = limiter
        self.signatures = signatures
        if unverified is None and limiter is not None and signatures.require:
            unverified = SourceRateLimiter(
                limiter.rate, limiter.burst, limiter.penalty, max_sources=limiter.max_sources
            )
        #: With signatures required: the budget of datagrams that did not verify.
        self.unverified = unverified
        self.replay_state = replay_state
        self._monotonic = monotonic
        self._wall = wall
        penalty = limiter.penalty if limiter is not None else 0
        self._penalized = Rejection(
            RejectReason.RATE_LIMITED, f"over its rate limit: ignored for {penalty:g} s"
        )
        self._junk_penalized = Rejection(
            RejectReason.RATE_LIMITED,
            f"unverified datagrams over the budget: only valid signatures taken for {penalty:g} s",
        )

    @classmethod
    def from_settings(cls, udp: UdpSettings) -> EdgeGuard:
        """The guard `udp` describes; its replay memory read from the state file, if any."""
        limits = udp.rate_limit
        limiter = (
            SourceRateLimiter(
                limits.per_source_rate,
                limits.burst,
                limits.penalty_seconds,
                max_sources=limits.max_sources,
            )
            if limits.enabled
            else None
        )
        signatures = SignatureChecker(
            udp.secret,
            require=udp.require_signature,
            window=udp.signature_window,
            max_recent=udp.replay_memory,
        )
        replay_state = None
        if udp.replay_state_file is not None:
            replay_state = ReplayStateFile(udp.replay_state_file, signatures)
            replay_state.load()
        return cls(SourceAllowlist(udp.allow), limiter, signatures, replay_state=replay_state)

    def admit(self, data: bytes, host: str) -> bytes | Rejection:
        """The payload of a datagram from `host` to decode, or why it is dropped.

        `IN_PENALTY_BOX` (identity) marks the drops not worth a log line.
        """
        if not self.allowlist.allowed(host):
            return NOT_ALLOWED
        limiter = self.limiter
        signatures = self.signatures
        if signatures.require and limiter is not None:
            return self._admit_verified(data, host, limiter)
        if limiter is not None:
            verdict = limiter.check(host, self._monotonic())
            if verdict != ALLOW:
                return self._penalized if verdict == PENALIZED else IN_PENALTY_BOX
        if signatures.require or data.startswith(b"XMLRC-SIG"):
            result = signatures.check(data, self._wall())
            if self.replay_state is not None and not isinstance(result, Rejection):
                self.replay_state.note_accepted()
            return result
        return data

    def _admit_verified(
        self, data: bytes, host: str, limiter: SourceRateLimiter
    ) -> bytes | Rejection:
        """Signatures required: verified traffic spends the source's budget, junk its own."""
        now = self._monotonic()
        if limiter.penalized(host, now):
            return IN_PENALTY_BOX
        result = self.signatures.check(data, self._wall())
        if isinstance(result, Rejection):
            unverified = self.unverified
            assert unverified is not None  # made in __init__ when signatures are required
            verdict = unverified.check(host, now)
            if verdict == ALLOW:
                return result
            return self._junk_penalized if verdict == PENALIZED else IN_PENALTY_BOX
        if self.replay_state is not None:
            self.replay_state.note_accepted()
        verdict = limiter.check(host, now)
        if verdict != ALLOW:
            return self._penalized if verdict == PENALIZED else IN_PENALTY_BOX
        return result

    def close(self) -> None:
        """Write the replay memory now (when the bridge stops), if it is kept in a file."""
        if self.replay_state is not None:
            self.replay_state.close()

    def collect_metrics(self) -> Iterator[Metric]:
        """The edge's own metrics beyond the bridge's: the unverified budget, the state file."""
        unverified = self.unverified
        if unverified is not None:
            yield CounterMetricFamily(
                "udp2xmpp_rate_limit_unverified_penalties",
                "Times a source sent more unverified datagrams than its budget (signatures "
                "required): its unverified datagrams dropped for a while, valid ones still taken.",
                value=unverified.penalties,
            )
            yield GaugeMetricFamily(
                "udp2xmpp_rate_limit_unverified_sources",
                "Source addresses the unverified-traffic budget remembers.",
                value=len(unverified),
            )
        if self.replay_state is not None:
            yield CounterMetricFamily(
                "udp2xmpp_replay_state_writes",
                "Times the replay memory was written to udp.replay_state_file.",
                value=self.replay_state.writes,
            )
            yield GaugeMetricFamily(
                "udp2xmpp_replay_memory",
                "Signatures remembered to refuse replays.",
                value=len(self.signatures),
            )
