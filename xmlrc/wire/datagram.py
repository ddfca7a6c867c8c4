"""Datagrams: bytes in, one `RecentChange` or a `Rejection` out, and back.

Every format the bridge accepts is detected per datagram:

- XMLRC ``<rc wikiid=...>`` (what `xmlrc_emitter` and ``rc2udp`` send),
- MediaWiki ``XMLRCFeedFormatter`` ``<recentchange>``,
- MediaWiki ``JSONRCFeedFormatter`` JSON,
- any of them behind the ``udp://host:port/PREFIX`` line prefix, which
  MediaWiki puts before every line of the payload.

`decode_datagram` never raises: whatever the bytes, the caller gets a change
or a rejection whose reason is a counter label.
"""

from __future__ import annotations

import json
from enum import StrEnum

from . import coerce, jsonfeed, mwxml, rcxml
from .errors import DecodeError, Rejection, RejectReason
from .model import RecentChange
from .safexml import parse_untrusted

#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507
#: Where the bridge listens by default (``udp.listen``), so where senders send by
#: default (``rc2udp`` targets, ``xmlrc-emit --target``): this machine, port 9390.
BRIDGE_HOST = "127.0.0.1"
BRIDGE_PORT = 9390
BRIDGE_ADDRESS = f"{BRIDGE_HOST}:{BRIDGE_PORT}"
_MAX_PREFIX = 64

#: Longest text accepted per field (enforced by every decoder: `coerce.checked`).
FIELD_LIMITS = coerce.FIELD_LIMITS


class DatagramFormat(StrEnum):
    """The payload formats a datagram can carry; senders pick one, the bridge detects each."""

    XMLRC = "xmlrc"
    MW_JSON = "mw-json"
    MW_XML = "mw-xml"


def decode_datagram(data: bytes, *, max_bytes: int = MAX_DATAGRAM) -> RecentChange | Rejection:
    """Decode one datagram. Never raises."""
    try:
        return _decode(data, max_bytes)
    except DecodeError as exc:
        return exc.rejection()
    except Exception as exc:
        return Rejection(RejectReason.BAD_FIELD, f"unexpected {type(exc).__name__}: {exc}"[:200])


def _decode(data: bytes, max_bytes: int) -> RecentChange:
    if len(data) > max_bytes:
        raise DecodeError(RejectReason.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    payload = strip_line_prefix(data.strip())
    if not payload:
        raise DecodeError(RejectReason.EMPTY, "no payload")
    first = payload[:1]
    if first == b"{":
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(RejectReason.BAD_ENCODING, str(exc)[:200]) from None
        return jsonfeed.change_from_json_bytes(text)
    if first == b"<":
        root = parse_untrusted(payload)
        tag = root.tag if isinstance(root.tag, str) else ""
        if tag in ("rc", rcxml.RC_TAG):
            return rcxml.change_from_element(root)
        if tag == "recentchange":
            return mwxml.change_from_recentchange(root)
        raise DecodeError(RejectReason.UNKNOWN_FORMAT, f"unknown root element <{tag[:40]}>")
    raise DecodeError(RejectReason.UNKNOWN_FORMAT, "neither JSON nor XML")


def strip_line_prefix(payload: bytes) -> bytes:
    """Remove MediaWiki's ``PREFIX `` from the start of every line, if there is one."""
    if payload[:1] in (b"{", b"<", b""):
        return payload
    prefix, space, _ = payload.partition(b" ")
    if not space or len(prefix) > _MAX_PREFIX or b"\n" in prefix:
        raise DecodeError(RejectReason.UNKNOWN_FORMAT, "neither JSON nor XML")
    marker = prefix + b" "
    lines = payload.split(b"\n")
    return b"\n".join(line.removeprefix(marker) for line in lines).strip()


def encode_datagram(
    change: RecentChange,
    fmt: DatagramFormat | str = DatagramFormat.XMLRC,
    *,
    prefix: str | None = None,
) -> bytes:
    """A datagram for `change` in one of the accepted formats."""
    fmt = DatagramFormat(fmt)
    if fmt is DatagramFormat.XMLRC:
        payload = rcxml.change_to_xml(change, namespace=None)
    elif fmt is DatagramFormat.MW_JSON:
        payload = json.dumps(
            jsonfeed.change_to_json(change, meta=False), separators=(",", ":")
        ).encode()
    else:
        payload = mwxml.change_to_recentchange(change)
    if prefix is not None:
        if not prefix or any(c.isspace() for c in prefix) or prefix[:1] in "{<":
            raise ValueError(f"bad line prefix: {prefix!r}")
        marker = prefix.encode() + b" "
        payload = b"\n".join(marker + line for line in payload.split(b"\n")) + b"\n"
    return payload
