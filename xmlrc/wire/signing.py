"""Signed datagrams: HMAC-SHA256 over a datagram, with a time and replay protection.

A signed datagram is one header line, then the payload unchanged::

    XMLRC-SIG v1 <unix-time> <hex-mac>\\n<payload>

- ``<unix-time>``: when it was signed, whole seconds since 1970 (UTC), decimal.
- ``<hex-mac>``: HMAC-SHA256, keyed with the shared secret (its UTF-8 bytes),
  of the datagram *without* the MAC field, that is of the bytes
  ``XMLRC-SIG v1 <unix-time>\\n<payload>``; 64 lowercase hex digits.
- ``<payload>``: any datagram the bridge accepts (XMLRC, MediaWiki XML or
  JSON, with or without a line prefix), byte for byte.

A receiver accepts it when the MAC matches, the time is within ``window``
seconds of its own clock (either way), and it has not seen the same MAC
within that window. Pure code: the caller passes the clock.
"""

from __future__ import annotations

import hmac
import struct
from collections import OrderedDict
from typing import NamedTuple

from .errors import Rejection, RejectReason

#: Every signed datagram starts with these bytes; nothing else may.
MAGIC = b"XMLRC-SIG"
_PREFIX_V1 = b"XMLRC-SIG v1 "
_MAC_HEX = 64
#: ``XMLRC-SIG v1 `` + at most 12 digits + `` `` + 64 hex digits.
_MAX_HEADER = len(_PREFIX_V1) + 12 + 1 + _MAC_HEX
#: The default tolerance, in seconds, between the signer's clock and ours.
DEFAULT_WINDOW = 300

UNSIGNED = Rejection(RejectReason.UNSIGNED, "no signature, and udp.require_signature is on")


def secret_bytes(secret: str | bytes) -> bytes:
    """The HMAC key for a secret given as text (UTF-8) or bytes; refuses an empty one."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the signing secret is empty")
    return key


def sign(payload: bytes, secret: str | bytes, now: float) -> bytes:
    """The signed datagram for `payload`, signed at unix time `now`."""
    if now < 0:
        raise ValueError("cannot sign before 1970")
    signed = _PREFIX_V1 + str(int(now)).encode("ascii") + b"\n" + payload
    mac = hmac.digest(secret_bytes(secret), signed, "sha256").hex().encode("ascii")
    head, _, rest = signed.partition(b"\n")
    return head + b" " + mac + b"\n" + rest


def is_signed(datagram: bytes) -> bool:
    """Whether `datagram` claims a signature (it may still be a bad one)."""
    return datagram.startswith(MAGIC)


def verify(
    datagram: bytes, secret: str | bytes, now: float, window: float = DEFAULT_WINDOW
) -> bytes | Rejection:
    """The payload of a correctly signed, fresh datagram, or why it is refused.

    Stateless: it does not catch replays (`SignatureChecker` does). Never raises.
    """
    result = _check(datagram, secret_bytes(secret), now, window)
    return result if isinstance(result, Rejection) else result[0]


def _check(
    datagram: bytes, key: bytes, now: float, window: float
) -> tuple[bytes, bytes, int] | Rejection:
    """(payload, mac, signing time) or a rejection."""
    if not datagram.startswith(MAGIC):
        return Rejection(RejectReason.UNSIGNED, "no signature")
    newline = datagram.find(b"\n", 0, _MAX_HEADER + 1)
    if newline < 0:
        return Rejection(RejectReason.BAD_SIGNATURE, "no header line")
    header = datagram[:newline]
    if not header.startswith(_PREFIX_V1):
        return Rejection(RejectReason.BAD_SIGNATURE, "unknown signature version")
    time_text, space, mac_text = header[len(_PREFIX_V1) :].partition(b" ")
    if not space or not 1 <= len(time_text) <= 12 or not time_text.isdigit():
        return Rejection(RejectReason.BAD_SIGNATURE, "malformed signature header")
    if len(mac_text) != _MAC_HEX:
        return Rejection(RejectReason.BAD_SIGNATURE, "the MAC is not 64 hex digits")
    mac = hmac.digest(key, datagram[: newline - _MAC_HEX - 1] + datagram[newline:], "sha256")
    # Compared as text: anything but the 64 lowercase hex digits of the right MAC fails.
    if not hmac.compare_digest(mac.hex().encode("ascii"), mac_text):
        return Rejection(RejectReason.BAD_SIGNATURE, "the MAC does not match")
    signed_at = int(time_text)
    if abs(now - signed_at) > window:
        return Rejection(
            RejectReason.STALE_SIGNATURE, f"signed {now - signed_at:.0f} s from our clock"
        )
    return datagram[newline + 1 :], mac, signed_at


class SignatureChecker:
    """The bridge's signature policy, with a bounded memory of recent MACs.

    - no secret: unsigned datagrams pass; a signed one is refused (it cannot be checked),
    - a secret: a signed datagram must verify, be fresh and not a replay;
      an unsigned one passes unless `require` is set.

    Replays are caught for `window` seconds through the last `max_recent`
    MACs. When more signed datagrams than that arrive within the window, the
    oldest MACs are forgotten, and a datagram signed no later than the latest
    forgotten one is refused as stale: a replay can never slip through.
    """

    __slots__ = ("_floor", "_key", "_recent", "accepted", "max_recent", "require", "window")

    def __init__(
        self,
        secret: str | bytes | None,
        *,
        require: bool = False,
        window: float = DEFAULT_WINDOW,
        max_recent: int = 100_000,
    ) -> None:
        if require and secret is None:
            raise ValueError("requiring signatures needs a secret")
        if max_recent < 1:
            raise ValueError("max_recent must be at least 1")
        self._key = None if secret is None else secret_bytes(secret)
        self.require = require
        self.window = window
        self.max_recent = max_recent
        self._recent: OrderedDict[bytes, int] = OrderedDict()
        self._floor = -1
        #: Signed datagrams accepted so far (tells a persister there is news).
        self.accepted = 0

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, datagram: bytes, now: float) -> bytes | Rejection:
        """The payload to decode, or the rejection. `now` is unix time."""
        if not datagram.startswith(MAGIC):
            return UNSIGNED if self.require else datagram
        if self._key is None:
            return Rejection(RejectReason.BAD_SIGNATURE, "signed, but udp.secret is not set")
        result = _check(datagram, self._key, now, self.window)
        if isinstance(result, Rejection):
            return result
        payload, mac, signed_at = result
        recent = self._recent
        if mac in recent:
            return Rejection(RejectReason.REPLAYED, "this signature was already used")
        if signed_at <= self._floor:
            return Rejection(
                RejectReason.STALE_SIGNATURE, "older than the replay memory (udp.replay_memory)"
            )
        recent[mac] = signed_at
        self.accepted += 1
        horizon = now - self.window
        while recent:  # forget what is past the window (arrival order ~ time order)
            oldest_mac, oldest_at = next(iter(recent.items()))
            if oldest_at >= horizon and len(recent) <= self.max_recent:
                break
            del recent[oldest_mac]
            if oldest_at >= horizon:  # forgotten for room, not age
                self._floor = max(self._floor, oldest_at)
        return payload

    def __len__(self) -> int:
        return len(self._recent)

    def snapshot(self, now: float) -> ReplayState:
        """What a restarted bridge needs to go on refusing replays: the MACs still
        within the window at `now` (oldest first), and the floor."""
        horizon = now - self.window
        entries = tuple((mac, at) for mac, at in self._recent.items() if at >= horizon)
        return ReplayState(self._floor, entries)

    def merge(self, state: ReplayState, now: float) -> int:
        """Remember what `state` remembers too (a previous run, another bridge); returns
        how many MACs were new. MACs past the window at `now` are skipped; past
        `max_recent`, the oldest are forgotten and the floor raised, as in `check`."""
        horizon = now - self.window
        recent = self._recent
        new = [(mac, at) for mac, at in state.entries if at >= horizon and mac not in recent]
        self._floor = max(self._floor, state.floor)
        if new:
            # Time order again, so forgetting from the front forgets the oldest.
            items = sorted([*recent.items(), *new], key=lambda item: item[1])
            overflow = len(items) - self.max_recent
            if overflow > 0:
                self._floor = max(self._floor, items[overflow - 1][1])
                items = items[overflow:]
            self._recent = OrderedDict(items)
        return len(new)


class ReplayState(NamedTuple):
    """A `SignatureChecker`'s replay memory: the floor and (MAC, signing time) pairs."""

    floor: int
    entries: tuple[tuple[bytes, int], ...]


_STATE_MAGIC = b"XMLRC-REPLAY v1\n"
_STATE_HEAD = struct.Struct(">qI")  # floor, number of entries
_STATE_ENTRY = struct.Struct(">32sq")  # raw MAC, signing time


def encode_replay_state(state: ReplayState) -> bytes:
    """`state` as bytes (40 per MAC): what the bridge writes to udp.replay_state_file."""
    body = b"".join(_STATE_ENTRY.pack(mac, at) for mac, at in state.entries)
    return _STATE_MAGIC + _STATE_HEAD.pack(state.floor, len(state.entries)) + body


def decode_replay_state(data: bytes) -> ReplayState:
    """The state `encode_replay_state` wrote; ValueError if `data` is not one, whole."""
    start = len(_STATE_MAGIC) + _STATE_HEAD.size
    if not data.startswith(_STATE_MAGIC) or len(data) < start:
        raise ValueError("not a replay state")
    floor, count = _STATE_HEAD.unpack_from(data, len(_STATE_MAGIC))
    if len(data) != start + count * _STATE_ENTRY.size:
        raise ValueError("a truncated or overlong replay state")
    entries = tuple(_STATE_ENTRY.iter_unpack(data[start:]))
    return ReplayState(floor, entries)
