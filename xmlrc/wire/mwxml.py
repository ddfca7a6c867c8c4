"""MediaWiki's ``XMLRCFeedFormatter`` datagrams: ``<recentchange>``.

The same fields as the JSON feed, written by MediaWiki's XML API printer:
scalars as attributes, true as an empty attribute, false and null left out,
``<length>``, ``<revision>`` and ``<log_params>`` as children, Unix
timestamps. Because false and absent look alike, an edit without
``patrolled`` is read as unpatrolled (MediaWiki only leaves it out when it
is false), a log action as "unknown"; log params come back as strings.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from . import coerce
from .errors import DecodeError, RejectReason
from .model import RecentChange
from .rcxml import flattened_xml_to_json
from .safexml import xml_safe


def change_from_recentchange(element: Any) -> RecentChange:
    """Decode MediaWiki's ``<recentchange>`` element into a change."""
    if element.tag != "recentchange":
        raise DecodeError(RejectReason.UNKNOWN_FORMAT, f"root is <{element.tag}>")
    attrib = element.attrib
    get = attrib.get
    length: dict[str, Any] = {}
    revision: dict[str, Any] = {}
    logparams: Any = None
    for child in element:
        if child.tag == "length":
            length = child.attrib
        elif child.tag == "revision":
            revision = child.attrib
        elif child.tag == "log_params":
            logparams = flattened_xml_to_json(child)
    wiki = coerce.wiki_id(get("wiki"))
    change_type = coerce.change_type(get("type"))
    is_log = change_type == "log"
    user = coerce.req_str(get("user"), "user")
    change = RecentChange(
        wiki=wiki,
        type=change_type,
        ns=coerce.namespace(get("namespace"), "namespace"),
        title=coerce.req_str(get("title"), "title"),
        timestamp=coerce.unix_time(coerce.req_str(get("timestamp"), "timestamp")),
        user=user,
        rcid=coerce.opt_int(get("id"), "id"),
        revid=coerce.opt_int(revision.get("new"), "revision.new"),
        old_revid=coerce.opt_int(revision.get("old"), "revision.old"),
        oldlen=coerce.opt_int(length.get("old"), "length.old"),
        newlen=coerce.opt_int(length.get("new"), "length.new"),
        comment=get("comment") or "",
        anon=coerce.is_ip_user(user),
        bot="bot" in attrib,
        minor="minor" in attrib,
        patrolled=True if "patrolled" in attrib else (None if is_log else False),
        logid=coerce.opt_int(get("log_id"), "log_id"),
        logtype=get("log_type"),
        logaction=get("log_action"),
        logparams=logparams,
        log_action_comment=get("log_action_comment"),
        server_url=get("server_url"),
        server_name=get("server_name"),
        server_script_path=get("server_script_path"),
    )
    return coerce.checked(change, from_xml=True)


def change_to_recentchange(change: RecentChange) -> bytes:
    """A datagram as MediaWiki's XMLRCFeedFormatter writes it (for tests and emulation)."""
    attrs: dict[str, str] = {}
    if change.rcid is not None:
        attrs["id"] = str(change.rcid)
    attrs["type"] = change.type
    attrs["namespace"] = str(change.ns)
    attrs["title"] = xml_safe(change.title)
    attrs["comment"] = xml_safe(change.comment)
    attrs["timestamp"] = str(int(change.timestamp.timestamp()))
    attrs["user"] = xml_safe(change.user)
    if change.bot:
        attrs["bot"] = ""
    if change.minor:
        attrs["minor"] = ""
    if change.patrolled:
        attrs["patrolled"] = ""
    if change.is_log:
        for key, value in (
            ("log_id", change.logid),
            ("log_type", change.logtype),
            ("log_action", change.logaction),
            ("log_action_comment", change.log_action_comment),
        ):
            if value is not None:
                attrs[key] = xml_safe(str(value))
    for key in ("server_url", "server_name", "server_script_path"):
        value = getattr(change, key)
        if value is not None:
            attrs[key] = xml_safe(value)
    attrs["wiki"] = change.wiki
    root = ET.Element("recentchange", attrs)
    if not change.is_log:
        ET.SubElement(root, "length", _pair(change.oldlen, change.newlen))
        ET.SubElement(root, "revision", _pair(change.old_revid, change.revid))
    else:
        root.append(_json_to_flattened_xml("log_params", change.logparams))
    return b"\n  " + ET.tostring(root, encoding="unicode").encode()


def _pair(old: int | None, new: int | None) -> dict[str, str]:
    out = {}
    if old is not None:
        out["old"] = str(old)
    if new is not None:
        out["new"] = str(new)
    return out


_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def _json_to_flattened_xml(tag: str, value: Any) -> ET.Element:
    element = ET.Element(tag)
    if isinstance(value, dict):
        for key, item in value.items():
            if not _XML_NAME.fullmatch(str(key)):
                continue  # not expressible in this format; the JSON feed keeps it
            if isinstance(item, dict | list):
                element.append(_json_to_flattened_xml(str(key), item))
            elif item is True:
                element.set(str(key), "")
            elif item is not None and item is not False:
                element.set(str(key), xml_safe(str(item)))
    elif isinstance(value, list):
        for item in value:
            element.append(_json_to_flattened_xml("_v", item))
    elif value is not None:
        element.text = xml_safe(str(value))
    return element
