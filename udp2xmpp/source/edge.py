"""The bridge's edge: what happens to a datagram before it is decoded.

In order, each step cheaper than the next, so a flood is refused as early
as possible:

1. the source address must be in ``udp.allow`` (cached per address);
2. the source must be within its rate limit (token bucket, penalty box);
3. the signature, when there is one (or when one is required), must verify.

`EdgeGuard.admit` returns the payload to decode or a `Rejection` whose
reason is the counter label. It never raises and does not log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from xmlrc.wire import Rejection, RejectReason
from xmlrc.wire.signing import SignatureChecker

from ..config import UdpSettings
from .allow import SourceAllowlist
from .ratelimit import ALLOW, PENALIZED, SourceRateLimiter

#: Preallocated: a flood must not cost an allocation per refused datagram.
NOT_ALLOWED = Rejection(RejectReason.NOT_ALLOWED, "source address not in udp.allow")
IN_PENALTY_BOX = Rejection(RejectReason.RATE_LIMITED, "source in the penalty box")


class EdgeGuard:
    __slots__ = ("_monotonic", "_penalized", "_wall", "allowlist", "limiter", "signatures")

    def __init__(
        self,
        allowlist: SourceAllowlist,
        limiter: SourceRateLimiter | None,
        signatures: SignatureChecker,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.allowlist = allowlist
        self.limiter = limiter
        self.signatures = signatures
        self._monotonic = monotonic
        self._wall = wall
        self._penalized = Rejection(
            RejectReason.RATE_LIMITED,
            f"over its rate limit: ignored for {limiter.penalty if limiter is not None else 0:g} s",
        )

    @classmethod
    def from_settings(cls, udp: UdpSettings) -> EdgeGuard:
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
        return cls(SourceAllowlist(udp.allow), limiter, signatures)

    def admit(self, data: bytes, host: str) -> bytes | Rejection:
        """The payload of a datagram from `host` to decode, or why it is dropped.

        `IN_PENALTY_BOX` (identity) marks the drops not worth a log line.
        """
        if not self.allowlist.allowed(host):
            return NOT_ALLOWED
        limiter = self.limiter
        if limiter is not None:
            verdict = limiter.check(host, self._monotonic())
            if verdict != ALLOW:
                return self._penalized if verdict == PENALIZED else IN_PENALTY_BOX
        signatures = self.signatures
        if signatures.require or data.startswith(b"XMLRC-SIG"):
            return signatures.check(data, self._wall())
        return data
