"""Typed reading of untrusted field values, shared by every decoder.

Each helper either returns a value of the promised type or raises
`DecodeError` naming the field, so the decoders stay short and agree on
what a valid number, flag, timestamp or wiki ID is.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .errors import DecodeError, RejectReason
from .model import is_ip_address, utc_from_iso, utc_from_unix

_INT_LIMIT = 2**63
_TIMESTAMP_RANGE = (0, 253402300799)  # 1970 .. 9999-12-31: what datetime can hold
#: A wiki ID is a database name: it becomes part of a JID, so nothing that could
#: address another entity (@ / : spaces quotes) is allowed.
WIKI_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_DIGITS = re.compile(r"-?[0-9]{1,19}")


def bad(name: str, why: str) -> DecodeError:
    return DecodeError(RejectReason.BAD_FIELD, f"{name}: {why}")


def missing(name: str) -> DecodeError:
    return DecodeError(RejectReason.MISSING_FIELD, name)


def opt_int(value: Any, name: str) -> int | None:
    """An integer from JSON (int) or XML (decimal text); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise bad(name, "a boolean where a number belongs")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise bad(name, f"not an integer: {str(value)[:40]!r}")
    if not -_INT_LIMIT < number < _INT_LIMIT:
        raise bad(name, "out of range")
    return number


def req_int(value: Any, name: str) -> int:
    number = opt_int(value, name)
    if number is None:
        raise missing(name)
    return number


def opt_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad(name, "not a string")


def req_str(value: Any, name: str) -> str:
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
    text = req_str(value, name)
    if not WIKI_ID.fullmatch(text):
        raise DecodeError(RejectReason.BAD_WIKI, f"{name}: not a valid wiki ID: {text[:40]!r}")
    return text


def change_type(value: Any) -> str:
    text = req_str(value, "type")
    if not text.isascii() or not text.isalpha() or len(text) > 20:
        raise bad("type", f"not a change type: {text[:40]!r}")
    return text


def unix_time(value: Any, name: str = "timestamp") -> datetime:
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
    text = req_str(value, name)
    try:
        return utc_from_iso(text)
    except ValueError:
        raise bad(name, f"not an ISO 8601 UTC time: {text[:40]!r}") from None


def str_list(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad(name, "not a list of strings")
    return tuple(value)


def is_ip_user(user: str) -> bool:
    return is_ip_address(user)
