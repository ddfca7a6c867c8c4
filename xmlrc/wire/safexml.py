"""Hardened XML: parsing untrusted bytes, and keeping built XML legal.

Datagrams come from the network, so the parser loads no DTD, expands no
entity, touches no network, and the result is checked for depth and
attribute count. Any document that declares a DTD or entity is refused
before libxml2 sees it. Strings headed into a stanza lose the characters
XML 1.0 forbids: one of them would make the server close the stream.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from .errors import DecodeError, RejectReason

MAX_DEPTH = 32
MAX_ATTRIBUTES = 64

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
)

_FORBIDDEN = re.compile(rb"<!(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)

# Everything XML 1.0 allows is: TAB, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF.
_ILLEGAL_XML_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
REPLACEMENT = "\ufffd"


def parse_untrusted(data: bytes) -> Any:
    """Parse one small XML document from the network into an lxml element.

    Raises `DecodeError` for anything that is not a plain, shallow document.
    """
    if _FORBIDDEN.search(data):
        raise DecodeError(RejectReason.FORBIDDEN_XML, "DTD or entity declarations are refused")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise DecodeError(RejectReason.BAD_XML, str(exc)[:200]) from None
    except ValueError as exc:  # e.g. an encoding declaration lxml will not honour
        raise DecodeError(RejectReason.BAD_XML, str(exc)[:200]) from None
    if root is None:
        raise DecodeError(RejectReason.BAD_XML, "no root element")
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise DecodeError(RejectReason.FORBIDDEN_XML, "DTD present")
    check_shape(root)
    return root


def check_shape(root: Any) -> None:
    """Refuse trees deeper than MAX_DEPTH or elements with too many attributes."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DecodeError(RejectReason.TOO_DEEP, f"nesting deeper than {MAX_DEPTH}")
        if len(element.attrib) > MAX_ATTRIBUTES:
            raise DecodeError(
                RejectReason.TOO_MANY_ATTRIBUTES, f"more than {MAX_ATTRIBUTES} attributes"
            )
        stack.extend((child, depth + 1) for child in element)


def xml_safe(text: str) -> str:
    """`text` with characters illegal in XML 1.0 replaced by U+FFFD."""
    if text.isprintable() and text.isascii():  # fast path: the common case
        return text
    return _ILLEGAL_XML_CHARS.sub(REPLACEMENT, text)


def has_illegal_xml_chars(text: str) -> bool:
    return _ILLEGAL_XML_CHARS.search(text) is not None
