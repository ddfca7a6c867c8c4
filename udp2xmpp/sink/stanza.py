"""The groupchat message for one change: ``<body>``, ``<rc>`` and a stable id.

Pure: builds the XML of the message; the XMPP shell only sends it. The
stable id goes in the message ``id`` and in an XEP-0359 ``<origin-id>``, so
clients can drop the duplicates that catch-up and resends bring.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xmlrc.wire import RecentChange, change_to_element, change_to_line
from xmlrc.wire.rcxml import escape_attribute
from xmlrc.wire.safexml import xml_safe
from xmlrc.wire.size import payload_text

__all__ = ["build_message", "envelope_size", "message_around", "message_text", "payload_text"]

CLIENT_NS = "jabber:client"
SID_NS = "urn:xmpp:sid:0"


def build_message(
    change: RecentChange, room: str, sender: str | None = None, namespace: str = CLIENT_NS
) -> ET.Element:
    """The ``<message type="groupchat">`` element carrying `change` to `room`.

    `sender` and `namespace` are set only in component mode, where the bridge
    names itself and stanzas live in ``jabber:component:accept``.
    """
    stable_id = change.stable_id
    attrs = {"to": room, "type": "groupchat", "id": xml_safe(stable_id)}
    if sender is not None:
        attrs["from"] = sender
    message = ET.Element(f"{{{namespace}}}message", attrs)
    body = ET.SubElement(message, f"{{{namespace}}}body")
    body.text = xml_safe(change_to_line(change))
    message.append(change_to_element(change))
    ET.SubElement(message, f"{{{SID_NS}}}origin-id", {"id": xml_safe(stable_id)})
    return message


def envelope_size(room: str, stable_id: str, sender: str | None) -> int:
    """An upper bound on the UTF-8 bytes a message adds around its payloads (pure)."""
    # The id twice (message and origin-id), escaping at most 6x, 4 bytes a character.
    return 160 + 6 * 4 * (len(room) + 2 * len(stable_id) + len(sender or ""))


def message_around(
    payloads: list[str], stable_ids: list[str], room: str, sender: str | None = None
) -> str:
    """One message to `room` around ready-made payloads (one per change; several for the
    opt-in batching). A message with several changes has the id ``first-id+count`` and
    one IRC-style body line per change, each change keeping its own ``<rc>``."""
    if len(payloads) == 1:
        message_id = stable_ids[0]
        inner = payloads[0]
    else:
        message_id = f"{stable_ids[0]}+{len(payloads)}"
        bodies, rcs = [], []
        for payload in payloads:
            body, _, rc = payload.partition("</body>")
            bodies.append(body.removeprefix("<body>"))
            rcs.append(rc)
        inner = "<body>" + "\n".join(bodies) + "</body>" + "".join(rcs)
    escaped_id = escape_attribute(xml_safe(message_id))
    sender_attr = f' from="{escape_attribute(sender)}"' if sender is not None else ""
    return (
        f'<message to="{escape_attribute(room)}" type="groupchat" id="{escaped_id}"{sender_attr}>'
        f'{inner}<origin-id xmlns="{SID_NS}" id="{escaped_id}"/></message>'
    )


def message_text(change: RecentChange, room: str, sender: str | None = None) -> str:
    """The message for one change, serialised directly (no namespace on ``<message>`` and
    ``<body>``: they take the stream's, ``jabber:client`` or ``jabber:component:accept``)."""
    return message_around([payload_text(change)], [change.stable_id], room, sender)


def batch_id(changes: list[RecentChange]) -> str:
    """The id of a message carrying several changes: the first one's id and the count."""
    return f"{changes[0].stable_id}+{len(changes)}"


def messages_text(changes: list[RecentChange], room: str, sender: str | None = None) -> str:
    """One message carrying several changes (the opt-in for very busy rooms)."""
    return message_around(
        [payload_text(c) for c in changes], [c.stable_id for c in changes], room, sender
    )
