"""The groupchat message for one change: ``<body>``, ``<rc>`` and a stable id.

Pure: builds the XML of the message; the XMPP shell only sends it. The
stable id goes in the message ``id`` and in an XEP-0359 ``<origin-id>``, so
clients can drop the duplicates that catch-up and resends bring.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xmlrc_emitter.wire import RecentChange, change_to_element, change_to_line
from xmlrc_emitter.wire.safexml import xml_safe

CLIENT_NS = "jabber:client"
SID_NS = "urn:xmpp:sid:0"


def build_message(change: RecentChange, room: str) -> ET.Element:
    """The ``<message type="groupchat">`` element carrying `change` to `room`."""
    stable_id = change.stable_id
    message = ET.Element(
        f"{{{CLIENT_NS}}}message", {"to": room, "type": "groupchat", "id": xml_safe(stable_id)}
    )
    body = ET.SubElement(message, f"{{{CLIENT_NS}}}body")
    body.text = xml_safe(change_to_line(change))
    message.append(change_to_element(change))
    ET.SubElement(message, f"{{{SID_NS}}}origin-id", {"id": xml_safe(stable_id)})
    return message
