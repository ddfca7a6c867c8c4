"""The groupchat message for one change: ``<body>``, ``<rc>`` and a stable id.

Pure: builds the XML of the message; the XMPP shell only sends it. The
stable id goes in the message ``id`` and in an XEP-0359 ``<origin-id>``, so
clients can drop the duplicates that catch-up and resends bring.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xmlrc.wire import RecentChange, change_to_element, change_to_line
from xmlrc.wire.rcxml import change_to_xml_text, escape_attribute, escape_text
from xmlrc.wire.safexml import xml_safe

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


def message_text(change: RecentChange, room: str, sender: str | None = None) -> str:
    """The same message serialised directly: the bridge's hot path.

    No namespace on ``<message>`` and ``<body>``: they take the stream's
    (``jabber:client``, or ``jabber:component:accept`` for a component).
    """
    stable_id = escape_attribute(xml_safe(change.stable_id))
    sender_attr = f' from="{escape_attribute(sender)}"' if sender is not None else ""
    return (
        f'<message to="{escape_attribute(room)}" type="groupchat" id="{stable_id}"{sender_attr}>'
        f"<body>{escape_text(xml_safe(change_to_line(change)))}</body>"
        f"{change_to_xml_text(change)}"
        f'<origin-id xmlns="{SID_NS}" id="{stable_id}"/></message>'
    )


def batch_id(changes: list[RecentChange]) -> str:
    """The id of a message carrying several changes: the first one's id and the count."""
    return f"{changes[0].stable_id}+{len(changes)}"


def messages_text(changes: list[RecentChange], room: str, sender: str | None = None) -> str:
    """One message carrying several changes (the opt-in for very busy rooms).

    The body has one IRC-style line per change; each change has its own
    ``<rc>`` (with its own stable id), so clients still see separate events.
    """
    if len(changes) == 1:
        return message_text(changes[0], room, sender)
    stable_id = escape_attribute(xml_safe(batch_id(changes)))
    sender_attr = f' from="{escape_attribute(sender)}"' if sender is not None else ""
    lines = "\n".join(escape_text(xml_safe(change_to_line(c))) for c in changes)
    payloads = "".join(change_to_xml_text(c) for c in changes)
    return (
        f'<message to="{escape_attribute(room)}" type="groupchat" id="{stable_id}"{sender_attr}>'
        f"<body>{lines}</body>{payloads}"
        f'<origin-id xmlns="{SID_NS}" id="{stable_id}"/></message>'
    )
