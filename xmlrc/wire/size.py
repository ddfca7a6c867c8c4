"""The size of a change's room message: exact per change, and the worst case
that the field limits allow.

A room message (``udp2xmpp.sink.stanza.message_text``) is the ``<body>`` line
(escaped), the ``<rc>`` element, and a wrapper that depends only on the room,
the sender and the stable id (``<message to=... id=...>``, ``<origin-id/>``).
`payload_text` builds the first two (the one definition of them) and
`encoded_size` measures it, so the bridge can refuse a change whose message
the XMPP server would refuse as too large.
"""

from __future__ import annotations

from . import coerce
from .ircline import change_to_line
from .model import RecentChange
from .rcxml import NAMESPACE, change_to_xml_text, escape_text
from .safexml import xml_safe

_RC_OPEN = len(f'<rc xmlns="{NAMESPACE}"')


def payload_text(change: RecentChange) -> str:
    """The part of a change's room message that does not depend on the room:
    ``<body>`` (the IRC line, XML-safe, escaped) and ``<rc>``. Built once per
    change, shared by every room it goes to (`udp2xmpp.sink.stanza`)."""
    line = escape_text(xml_safe(change_to_line(change)))
    return f"<body>{line}</body>{change_to_xml_text(change)}"


def encoded_size(change: RecentChange) -> int:
    """The exact UTF-8 size of `payload_text`: what a change puts in its room message.

    The whole message adds a wrapper of fixed shape: ``<message to="ROOM"
    type="groupchat" id="ID">`` ... ``<origin-id xmlns="urn:xmpp:sid:0"
    id="ID"/></message>`` (plus ``from`` for a component).
    """
    text = payload_text(change)
    return len(text) if text.isascii() else len(text.encode())


# -- the worst case the limits allow ---------------------------------------------------

#: Most bytes one character can become: in an attribute (``"`` is ``&quot;``),
#: in element text or the body line (``&`` is ``&amp;``; an astral character
#: is 4 bytes; the line's entity decoding never grows text past this).
ATTRIBUTE_FACTOR = 6
TEXT_FACTOR = 5
_DIGITS = 19  # ids and lengths below 2**63
_ALL_ATTRIBUTES = (
    "wikiid", "type", "ns", "title", "rcid", "pageid", "revid", "old_revid", "userid", "oldlen",
    "newlen", "logid", "user", "timestamp", "comment", "parsedcomment", "sha1", "logtype",
    "logaction", "log_action_comment", "server_url", "server_name", "server_script_path", "anon",
    "bot", "minor", "redirect", "autopatrolled", "new", "unpatrolled",
)  # fmt: skip
_SIZE = len("(-9223372036854775807)")


def worst_case_size() -> int:
    """An upper bound of `encoded_size` for any change the decoders accept,
    from the field limits in `coerce` alone."""
    limit = coerce.FIELD_LIMITS
    # The body of a log action: [[Special:Log/TYPE]] ACTION  * USER *  LOG_LINE
    log_body = len("[[Special:Log/]]   *  *  ") + TEXT_FACTOR * (
        limit["logtype"] + limit["logaction"] + limit["user"]
        + max(limit["log_action_comment"], limit["comment"])
    )  # fmt: skip
    # Of an edit: [[TITLE]] !NMB URL * USER * (+SIZE) COMMENT
    url = TEXT_FACTOR * (limit["server_url"] + limit["server_script_path"])
    url += len("/index.php?diff=&amp;oldid=&amp;rcid=") + 3 * _DIGITS
    edit_body = len("[[]] !NMB  *  *  ") + _SIZE + url + TEXT_FACTOR * (
        limit["title"] + limit["user"] + limit["comment"]
    )  # fmt: skip
    rc = _RC_OPEN + sum(len(name) + 4 for name in _ALL_ATTRIBUTES) + len("></rc>")
    rc += 64 + len("categorize") + len("-2147483648") + 8 * _DIGITS  # wikiid type ns ids
    rc += len("9999-12-31T23:59:59.999999Z")
    rc += ATTRIBUTE_FACTOR * sum(limit.values())
    rc += len("<tags></tags>") + coerce.MAX_TAGS * (11 + TEXT_FACTOR * coerce.MAX_TAG_LENGTH)
    rc += len("<logparams></logparams>") + TEXT_FACTOR * coerce.MAX_LOGPARAMS_CHARS
    return len("<body></body>") + max(log_body, edit_body) + rc


#: `worst_case_size()` under today's limits.
WORST_CASE_SIZE = worst_case_size()
