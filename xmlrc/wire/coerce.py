"""Typed reading of untrusted field values, shared by every decoder.

Each helper either returns a value of the promised type or raises
`DecodeError` naming the field, so the decoders stay short and agree on
what a valid number, flag, timestamp or wiki ID is.

`checked` is the one place where the limits of the text fields, tags and
log parameters are enforced: every decoder passes its result through it,
whatever the input format, so whatever is accepted can always be encoded
again (every encoding, the room message included) and its size is bounded.
Integers are bounded where they are read (`opt_int`, `namespace`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from operator import attrgetter
from typing import Any

from .errors import DecodeError, RejectReason
from .model import CHANGE_TYPES, RecentChange, is_ip_address, utc_from_iso, utc_from_unix
from .safexml import has_illegal_xml_chars, xml_safe

_TIMESTAMP_RANGE = (0, 253402300799)  # 1970 .. 9999-12-31: what datetime can hold
#: A wiki ID is a database name: it becomes part of a JID, so nothing that could
#: address another entity (@ / : spaces quotes) is allowed.
WIKI_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_DIGITS = re.compile(r"-?[0-9]{1,19}")


#: Longest text accepted per string field, in characters: generous beside what
#: MediaWiki sends (titles and user names are at most 255 bytes, comments 500
#: characters, log types and actions 32 bytes, a SHA-1 40 hex digits), small
#: enough that one change cannot make an outsized stanza.
FIELD_LIMITS: dict[str, int] = {
    "title": 1024,
    "user": 1024,
    "comment": 4000,
    "parsedcomment": 16000,
    "log_action_comment": 16000,
    "sha1": 64,
    "logtype": 64,
    "logaction": 64,
    "server_url": 255,
    "server_name": 255,
    "server_script_path": 255,
}
#: At most this many change tags, each at most `MAX_TAG_LENGTH` characters
#: (MediaWiki tag names are at most 255 bytes; a change rarely has ten tags).
MAX_TAGS = 64
MAX_TAG_LENGTH = 255
#: Log parameters: nesting (the outer object or list is level 1), values
#: counted at every level, and the length of their JSON text in characters.
#: MediaWiki's nest two or three levels; the largest real ones (a revision
#: deletion of 500 revisions) are a few thousand characters.
MAX_LOGPARAMS_DEPTH = 16
MAX_LOGPARAMS_ITEMS = 10_000
MAX_LOGPARAMS_CHARS = 65_536
#: Namespace numbers are 32-bit signed in MediaWiki; ids and lengths unsigned.
NS_RANGE = (-(2**31), 2**31 - 1)
ID_RANGE = (0, 2**63 - 1)
#: The string fields (all limited), any of which JSON may fill with characters XML forbids.
_TEXT_FIELDS = tuple(FIELD_LIMITS)
_LIMITS = tuple(FIELD_LIMITS.items())


def bad(name: str, why: str) -> DecodeError:
    """A `BAD_FIELD` error naming the field."""
    return DecodeError(RejectReason.BAD_FIELD, f"{name}: {why}")


def missing(name: str) -> DecodeError:
    """A `MISSING_FIELD` error naming the field."""
    return DecodeError(RejectReason.MISSING_FIELD, name)


def _integer(value: Any, name: str) -> int | None:
    # Any integer of at most 19 digits, from JSON (int) or XML (decimal text).
    if value is None:
        return None
    if isinstance(value, bool):
        raise bad(name, "a boolean where a number belongs")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise bad(name, f"not an integer: {str(value)[:40]!r}")


def opt_int(value: Any, name: str) -> int | None:
    """An id or a length (`ID_RANGE`) from JSON (int) or XML (decimal text); None stays None."""
    number = _integer(value, name)
    if number is not None and not ID_RANGE[0] <= number <= ID_RANGE[1]:
        raise bad(name, "out of range")
    return number


def req_int(value: Any, name: str) -> int:
    """As `opt_int`, but the field must be there."""
    number = opt_int(value, name)
    if number is None:
        raise missing(name)
    return number


def namespace(value: Any, name: str) -> int:
    """A namespace number (`NS_RANGE`: 32-bit in MediaWiki, negative for Special and Media)."""
    number = _integer(value, name)
    if number is None:
        raise missing(name)
    if not NS_RANGE[0] <= number <= NS_RANGE[1]:
        raise bad(name, "out of range")
    return number


def opt_str(value: Any, name: str) -> str | None:
    """A string, or None when absent; anything else is refused."""
    if value is None or isinstance(value, str):
        return value
    raise bad(name, "not a string")


def req_str(value: Any, name: str) -> str:
    """A string that must be there."""
    if value is None:
        raise missing(name)
    if not isinstance(value, str):
        raise bad(name, "not a string")
    return value


def json_bool(value: Any, name: str) -> bool | None:
    """A JSON flag: true/false, absent or null is None (0/1 tolerated)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise bad(name, "not a boolean")


def wiki_id(value: Any, name: str = "wiki") -> str:
    """A wiki ID (a database name: safe inside a JID), else `BAD_WIKI`."""
    text = req_str(value, name)
    if not WIKI_ID.fullmatch(text):
        raise DecodeError(RejectReason.BAD_WIKI, f"{name}: not a valid wiki ID: {text[:40]!r}")
    return text


def change_type(value: Any) -> str:
    """One of MediaWiki's five change types (``rc_type``); any other word is refused."""
    text = req_str(value, "type")
    if text not in CHANGE_TYPES:
        raise bad("type", f"not a change type: {text[:40]!r}")
    return text


def unix_time(value: Any, name: str = "timestamp") -> datetime:
    """A Unix time (number or decimal text) between 1970 and 9999."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad(name, "not a Unix time")
    try:
        seconds = float(value) if isinstance(value, str) else value
    except ValueError:
        raise bad(name, "not a Unix time") from None
    if not _TIMESTAMP_RANGE[0] <= seconds <= _TIMESTAMP_RANGE[1]:
        raise bad(name, "out of range")
    return utc_from_unix(seconds)


def iso_time(value: Any, name: str = "timestamp") -> datetime:
    """An ISO 8601 time with a timezone, as UTC."""
    text = req_str(value, name)
    try:
        return utc_from_iso(text)
    except ValueError:
        raise bad(name, f"not an ISO 8601 UTC time: {text[:40]!r}") from None


def str_list(value: Any, name: str) -> tuple[str, ...] | None:
    """A JSON list of strings as a tuple; None stays None."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad(name, "not a list of strings")
    return tuple(value)


def is_ip_user(user: str) -> bool:
    """True when a user name is an IP address (MediaWiki's anonymous editors)."""
    return is_ip_address(user)


# -- strict JSON ---------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key: the sender and we might read different ones.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # linear: a datagram may hold thousands of keys
            if key in seen:
                raise DecodeError(RejectReason.BAD_JSON, f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension, not JSON: we could not send them on.
    raise DecodeError(RejectReason.BAD_JSON, f"{name} is not JSON")


_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def strict_json(text: str | bytes) -> Any:
    """Parse JSON text, refusing duplicate keys and NaN/Infinity (`BAD_JSON`)."""
    try:
        if isinstance(text, bytes):
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        return _STRICT_JSON.decode(text)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError(RejectReason.BAD_JSON, str(exc)[:200]) from None


# -- the limits of every field, in one place -------------------------------------------


def checked(change: RecentChange, *, from_xml: bool = False) -> RecentChange:
    """`change` if every field is within its limit, else `DecodeError` (`BAD_FIELD`)
    naming the field (by its `RecentChange` name).

    Characters XML 1.0 cannot carry (controls, lone surrogates: only JSON can
    bring them) are replaced by U+FFFD here, as MediaWiki does with its own
    input, so that every encoding carries exactly the change we return.
    `from_xml` says the strings come from an XML parser, which allows none.
    """
    texts = _get_texts(change)
    for value, (name, limit) in zip(texts, _LIMITS, strict=True):
        if value is not None and len(value) > limit:
            raise bad(name, f"longer than {limit} characters")
    fixes: dict[str, Any] = {}
    # Printable text (nearly every change: one C-speed test) has no character XML forbids.
    if not from_xml and not "".join(filter(None, texts)).isprintable():
        for value, name in zip(texts, _TEXT_FIELDS, strict=True):
            if value and has_illegal_xml_chars(value):
                fixes[name] = xml_safe(value)
    tags = change.tags
    if tags is not None:
        if len(tags) > MAX_TAGS:
            raise bad("tags", f"more than {MAX_TAGS} tags")
        if tags and max(map(len, tags)) > MAX_TAG_LENGTH:
            raise bad("tags", f"a tag longer than {MAX_TAG_LENGTH} characters")
        if any(has_illegal_xml_chars(tag) for tag in tags if not tag.isprintable()):
            fixes["tags"] = tuple(map(xml_safe, tags))
    if change.logparams is not None:
        logparams = checked_logparams(change.logparams)
        if logparams is not change.logparams:
            fixes["logparams"] = logparams
    return change.with_changes(**fixes) if fixes else change


_get_texts = attrgetter(*_TEXT_FIELDS)
# What the encoders write, so that what passes here can be written.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def checked_logparams(value: Any) -> Any:
    """Log parameters within `MAX_LOGPARAMS_DEPTH`, `MAX_LOGPARAMS_ITEMS` and
    `MAX_LOGPARAMS_CHARS`, of JSON types only (finite numbers: ``1e400`` parses
    as infinity), else `DecodeError` (`BAD_FIELD`, ``logparams``).

    Returns `value` itself, or a copy with characters XML cannot carry replaced.
    `value` is what a JSON or XML parser gives (string keys, lists).
    """
    try:
        text = _ENCODER.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise bad("logparams", f"not encodable as JSON: {str(exc)[:80]}") from None
    if len(text) > MAX_LOGPARAMS_CHARS:
        raise bad("logparams", f"JSON text longer than {MAX_LOGPARAMS_CHARS} characters")
    # Cheap bounds from the text (brackets and commas inside strings only
    # overcount): depth <= containers, values <= commas + containers + 1.
    containers = text.count("{") + text.count("[")
    if containers > MAX_LOGPARAMS_DEPTH or text.count(",") + containers >= MAX_LOGPARAMS_ITEMS:
        _check_shape(value)
    # JSON escapes controls; only lone surrogates and U+FFFE/U+FFFF get through raw.
    if not text.isprintable() and has_illegal_xml_chars(text):
        return _xml_safe_json(value)
    return value


def _check_shape(value: Any) -> None:
    # Exact depth and count, without recursion (the value may be deep).
    stack: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while stack:
        node, depth = stack.pop()
        items += 1
        if items > MAX_LOGPARAMS_ITEMS:
            raise bad("logparams", f"more than {MAX_LOGPARAMS_ITEMS} values")
        if isinstance(node, dict | list):
            if depth > MAX_LOGPARAMS_DEPTH:
                raise bad("logparams", f"nested deeper than {MAX_LOGPARAMS_DEPTH}")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def _xml_safe_json(value: Any) -> Any:
    # Depth is already bounded by checked_logparams, so recursion is safe here.
    if isinstance(value, str):
        return xml_safe(value)
    if isinstance(value, dict):
        return {xml_safe(key): _xml_safe_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_xml_safe_json(item) for item in value]
    return value
