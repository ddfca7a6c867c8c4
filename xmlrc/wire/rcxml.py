"""The ``<rc>`` element: the payload of every stanza and of XMLRC datagrams.

Its attributes are those of the MediaWiki API's ``list=recentchanges`` XML
(``rcid``, ``ns``, ``title``, ``revid``, ``old_revid``, ``oldlen``, ``newlen``,
ISO 8601 ``timestamp``, flags as empty attributes such as ``bot=""``,
``logid``/``logtype``/``logaction``), plus ``wikiid`` and the server URL
fields the links need. ``<tags>`` holds ``<tag>`` children as in the API.

``<logparams>`` carries the parameters as JSON text: the API's XML flattens
them (``0``, ``"0"`` and ``false`` all look alike), and we promise a lossless
trip. The decoder also reads the API's flattened form, for ``<rc>`` elements
copied straight out of ``api.php`` output.

In a stanza the element lives in the namespace `NAMESPACE`; in a datagram it
has none, as the original XMLRC extension sent it. Building works on any
ElementTree-compatible factory (stdlib for slixmpp stanzas); reading works on
stdlib and lxml elements alike.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from . import coerce
from .errors import DecodeError, RejectReason
from .model import RecentChange, iso_from_utc
from .safexml import xml_safe

#: The namespace of ``<rc>`` inside stanzas.
NAMESPACE = "urn:xmlrc:rc:1"
RC_TAG = f"{{{NAMESPACE}}}rc"

_INT_ATTRS = ("rcid", "pageid", "revid", "old_revid", "userid", "oldlen", "newlen", "logid")
_STR_ATTRS = (
    "parsedcomment",
    "sha1",
    "logtype",
    "logaction",
    "log_action_comment",
    "server_url",
    "server_name",
    "server_script_path",
)
_FLAGS = ("anon", "bot", "minor", "redirect", "autopatrolled")

ElementFactory = Callable[..., Any]


def rc_attributes(change: RecentChange) -> dict[str, str]:
    """The attributes of a change's ``<rc>`` (illegal XML characters replaced)."""
    attrs: dict[str, str] = {
        "wikiid": change.wiki,
        "type": change.type,
        "ns": str(change.ns),
        "title": xml_safe(change.title),
    }
    for name in _INT_ATTRS:
        value = getattr(change, name)
        if value is not None:
            attrs[name] = str(value)
    attrs["user"] = xml_safe(change.user)
    attrs["timestamp"] = iso_from_utc(change.timestamp)
    attrs["comment"] = xml_safe(change.comment)
    for name in _STR_ATTRS:
        value = getattr(change, name)
        if value is not None:
            attrs[name] = xml_safe(value)
    for name in _FLAGS:
        if getattr(change, name):
            attrs[name] = ""
    if change.new:
        attrs["new"] = ""
    if change.patrolled is True:
        attrs["patrolled"] = ""
    elif change.patrolled is False:
        attrs["unpatrolled"] = ""
    return attrs


def logparams_text(change: RecentChange) -> str:
    """The JSON text of the log parameters, as ``<logparams>`` holds it (unescaped)."""
    return xml_safe(json.dumps(change.logparams, ensure_ascii=False))


def change_to_element(
    change: RecentChange, *, namespace: str | None = NAMESPACE, factory: ElementFactory = ET.Element
) -> Any:
    """Build the ``<rc>`` element of a change, on any ElementTree-like factory."""
    prefix = f"{{{namespace}}}" if namespace else ""
    root = factory(f"{prefix}rc", rc_attributes(change))
    if change.tags is not None:
        tags = factory(f"{prefix}tags", {})
        for tag in change.tags:
            child = factory(f"{prefix}tag", {})
            child.text = xml_safe(tag)
            tags.append(child)
        root.append(tags)
    if change.logparams is not None:
        params = factory(f"{prefix}logparams", {})
        params.text = logparams_text(change)
        root.append(params)
    return root


# Escaping for attribute values and text: what XML needs, plus the whitespace
# characters an attribute value would otherwise lose to normalisation. Plain
# `in` tests and `replace` beat `str.translate` several times over, and most
# values need nothing at all.
_ATTR_ESCAPES = (
    ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("\n", "&#10;"),
    ("\r", "&#13;"), ("\t", "&#9;"),
)  # fmt: skip
_TEXT_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))


_NEEDS_ATTR_ESCAPE = re.compile('[&<>"\n\r\t]')


def escape_attribute(value: str) -> str:
    for char, entity in _ATTR_ESCAPES:
        if char in value:
            value = value.replace(char, entity)
    return value


def escape_text(value: str) -> str:
    for char, entity in _TEXT_ESCAPES:
        if char in value:
            value = value.replace(char, entity)
    return value


def change_to_xml_text(change: RecentChange, *, namespace: str | None = NAMESPACE) -> str:
    """The ``<rc>`` element serialised directly (the hot path: no element objects).

    The namespace is written as a plain ``xmlns`` declaration, never as a
    prefix, as RFC 6120 wants for stanza content.
    """
    parts = ["<rc"]
    if namespace:
        parts.append(f' xmlns="{namespace}"')
    attrs = rc_attributes(change)
    if _NEEDS_ATTR_ESCAPE.search("".join(attrs.values())) is None:  # the common case
        parts.extend([f' {key}="{value}"' for key, value in attrs.items()])
    else:
        parts.extend([f' {key}="{escape_attribute(value)}"' for key, value in attrs.items()])
    if change.tags is None and change.logparams is None:
        parts.append("/>")
        return "".join(parts)
    parts.append(">")
    if change.tags is not None:
        parts.append("<tags>")
        parts.extend(f"<tag>{escape_text(xml_safe(tag))}</tag>" for tag in change.tags)
        parts.append("</tags>")
    if change.logparams is not None:
        parts.append(f"<logparams>{escape_text(logparams_text(change))}</logparams>")
    parts.append("</rc>")
    return "".join(parts)


def change_to_xml(change: RecentChange, *, namespace: str | None = NAMESPACE) -> bytes:
    """The ``<rc>`` element as UTF-8 bytes (no XML declaration)."""
    return change_to_xml_text(change, namespace=namespace).encode()


def change_from_element(element: Any) -> RecentChange:
    """Read an ``<rc>`` element (ours, in or out of the namespace, or the API's)."""
    if _local(element.tag) != "rc":
        raise DecodeError(RejectReason.UNKNOWN_FORMAT, f"root is <{_local(element.tag)}>, not <rc>")
    get = element.attrib.get
    ints: dict[str, Any] = {name: coerce.opt_int(get(name), name) for name in _INT_ATTRS}
    strs: dict[str, Any] = {name: get(name) for name in _STR_ATTRS}
    flags: dict[str, Any] = {name: name in element.attrib for name in _FLAGS}
    tags: tuple[str, ...] | None = None
    logparams: Any = None
    for child in element:
        name = _local(child.tag)
        if name == "tags":
            tags = tuple(tag.text or "" for tag in child if _local(tag.tag) == "tag")
        elif name == "logparams":
            logparams = _read_logparams(child)
    if "patrolled" in element.attrib:
        patrolled: bool | None = True
    elif "unpatrolled" in element.attrib:
        patrolled = False
    else:
        patrolled = None
    wiki = coerce.wiki_id(get("wikiid"), "wikiid")
    change_type = coerce.change_type(get("type"))
    change = RecentChange(
        wiki=wiki,
        type=change_type,
        ns=coerce.namespace(get("ns"), "ns"),
        title=coerce.req_str(get("title"), "title"),
        timestamp=coerce.iso_time(get("timestamp")),
        user=get("user") or "",
        comment=get("comment") or "",
        patrolled=patrolled,
        tags=tags,
        logparams=logparams,
        **ints,
        **strs,
        **flags,
    )
    return coerce.checked(change, from_xml=True)


#: What reading a hostile ``<rc>`` may raise, beside DecodeError: a timestamp that
#: overflows, a value of the wrong type deep in a stdlib parser.
DECODE_FAILURES = (DecodeError, ValueError, OverflowError, TypeError)


def changes_in_message(message: Any) -> list[RecentChange]:
    """The changes of every readable ``<rc>`` of a stanza element (unreadable ones
    skipped: the caller counts what it needs)."""
    changes = []
    for element in message.findall(RC_TAG):
        try:
            changes.append(change_from_element(element))
        except DECODE_FAILURES:
            continue
    return changes


def _read_logparams(element: Any) -> Any:
    text = (element.text or "").strip()
    if text and len(element) == 0 and not element.attrib:
        try:
            return coerce.strict_json(text)
        except DecodeError as exc:  # duplicate keys and NaN too: we could not send them on
            raise coerce.bad("logparams", f"not JSON: {exc.detail}") from None
    return flattened_xml_to_json(element)


def flattened_xml_to_json(element: Any) -> Any:
    """Best-effort reading of MediaWiki's XML form of a JSON value.

    MediaWiki's XML output writes object members as attributes (true as an
    empty attribute, false left out) or child elements, and list items as
    ``<_v>`` (or other same-named) children. Types are lost on the way, so
    this gives strings; the JSON formats carry the exact values.
    """
    children = list(element)
    if children and not element.attrib and all(_local(c.tag) == "_v" for c in children):
        return [flattened_xml_to_json(c) for c in children]
    if not children and not element.attrib:
        return element.text if element.text and element.text.strip() else {}
    out: dict[str, Any] = {k: (True if v == "" else v) for k, v in element.attrib.items()}
    for child in children:
        grandchildren = list(child)
        if grandchildren and not child.attrib:
            tags = {_local(g.tag) for g in grandchildren}
            if len(tags) == 1:  # a list: <flags><f>x</f></flags>
                out[_local(child.tag)] = [flattened_xml_to_json(g) for g in grandchildren]
                continue
        out[_local(child.tag)] = flattened_xml_to_json(child)
    return out


def _local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]
