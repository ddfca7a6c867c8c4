"""Bounds on what ``meta=siteinfo`` may say about a wiki, before rc2udp believes it.

The four fields rc2udp uses (``wikiid``, ``server``, ``servername``,
``scriptpath``) go into every datagram it sends and into the state file, so a
broken or hostile API must not be able to make them huge or smuggle control
characters, markup or another URL scheme into them.  Real values are short:
``enwiki``, ``//en.wikipedia.org``, ``en.wikipedia.org``, ``/w``.
"""

from __future__ import annotations

import re
from typing import Any

from xmlrc.wire import coerce

__all__ = ["SiteinfoError", "check_general"]

#: Longest accepted value of each field: a DNS name is at most 253 characters,
#: and a change carries at most 255 of a URL (``server`` leaves room for the
#: ``https:`` that completes a protocol-relative one).
MAX_LENGTH = {"wikiid": 64, "server": 249, "servername": 253, "scriptpath": 255}

# A host is a DNS name (letters, digits, dots, hyphens, underscores; IDNs as
# punycode) or a bracketed IPv6 address, optionally with a port.
_HOST = r"(?:[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
_SHAPES = {
    "server": re.compile(rf"(?:https?:)?//{_HOST}"),
    "servername": re.compile(_HOST),
    # Empty (the wiki at the root) or absolute; printable ASCII and non-ASCII
    # letters, no space, no query or fragment, nothing an XML or JSON feed must escape.
    "scriptpath": re.compile(r"(?:/[^\s\x00-\x1f\x7f?#<>\"'\\]*)?"),
}


class SiteinfoError(ValueError):
    """A siteinfo field is missing, too long or malformed; the message names the field."""


def _shown(value: str) -> str:
    return repr(value[:40]) + ("..." if len(value) > 40 else "")


def check_general(general: Any) -> None:
    """Raise `SiteinfoError` unless siteinfo's ``general`` object is within bounds."""
    if not isinstance(general, dict):
        raise SiteinfoError("siteinfo general: not an object")
    for name, longest in MAX_LENGTH.items():
        value = general.get(name)
        if value is None and name != "wikiid":
            continue  # optional: the changes then carry no URL
        if not isinstance(value, str):
            raise SiteinfoError(f"siteinfo {name}: not a string")
        if len(value) > longest:
            raise SiteinfoError(
                f"siteinfo {name}: {len(value)} characters, at most {longest} accepted"
            )
        if name == "wikiid":
            valid = coerce.WIKI_ID.fullmatch(value) is not None
        else:
            valid = _SHAPES[name].fullmatch(value) is not None
        if not valid:
            raise SiteinfoError(f"siteinfo {name}: not a valid {name}: {_shown(value)}")
