"""XEP-0045 multi-user chat: join, read and submit a room's configuration, affiliations,
and what a room says about itself (service discovery).

Plain coroutines over a slixmpp client, with an explicit ``ifrom`` so the
same code serves a c2s client and an XEP-0114 component (which must name
its own sender). Joining reads our own presence back: its affiliation and
role say whether we own the room, status 201 that we created it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

__all__ = [
    "PUBLISHER_NICK",
    "JoinError",
    "Occupancy",
    "RoomInfo",
    "get_config",
    "join",
    "leave",
    "room_info",
    "set_affiliation",
    "submit_config",
]

#: The nick the bridge publishes under in its rooms by default (``rooms.nick``),
#: hence the one a client believes by default (``publisher``).
PUBLISHER_NICK = "rcbot"

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
MUC_OWNER_NS = "http://jabber.org/protocol/muc#owner"
MUC_ADMIN_NS = "http://jabber.org/protocol/muc#admin"
DATA_NS = "jabber:x:data"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
ROOMCONFIG_FORM = "http://jabber.org/protocol/muc#roomconfig"

_ids = itertools.count(1)


class JoinError(Exception):
    """The room refused us; ``condition`` is the XMPP error (``conflict``: the nick is taken)."""

    def __init__(self, room: str, condition: str, text: str = "") -> None:
        self.room = room
        self.condition = condition
        detail = f" ({text})" if text else ""
        super().__init__(f"cannot join {room}: {condition}{detail}")

    @property
    def nick_taken(self) -> bool:
        return self.condition == "conflict"


@dataclass(frozen=True, slots=True)
class Occupancy:
    """Our place in a room after joining: nick, affiliation, role, and the status codes
    of our own presence (110 self, 201 room created, 100 real JIDs visible to all...)."""

    room: str
    nick: str
    affiliation: str
    role: str
    status_codes: frozenset[int]

    @property
    def created(self) -> bool:
        return 201 in self.status_codes

    @property
    def owner(self) -> bool:
        return self.affiliation == "owner"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room's disco#info: its features (``muc_moderated``, ``muc_membersonly``, ...)."""

    room: str
    features: frozenset[str]
    name: str | None = None

    @property
    def moderated(self) -> bool:
        return "muc_moderated" in self.features

    @property
    def members_only(self) -> bool:
        return "muc_membersonly" in self.features


def occupant_item(presence_xml: Any) -> tuple[str, str, str | None, frozenset[int]]:
    """(affiliation, role, real jid, status codes) of a MUC presence element (pure)."""
    x = presence_xml.find(f"{{{MUC_USER_NS}}}x")
    if x is None:
        return "none", "none", None, frozenset()
    item = x.find(f"{{{MUC_USER_NS}}}item")
    codes = frozenset(
        int(s.get("code"))
        for s in x.findall(f"{{{MUC_USER_NS}}}status")
        if s.get("code", "").isdigit()
    )
    if item is None:
        return "none", "none", None, codes
    return item.get("affiliation", "none"), item.get("role", "none"), item.get("jid"), codes


def _presence(client: Any, to: str, *, ifrom: str | None, ptype: str | None = None) -> Any:
    presence = client.make_presence(
        pto=slixmpp.JID(to), pfrom=slixmpp.JID(ifrom) if ifrom else None
    )
    if ptype:
        presence["type"] = ptype
    return presence


async def join(
    client: Any,
    room: str,
    nick: str,
    *,
    timeout: float,
    ifrom: str | None = None,
    history: int = 0,
) -> Occupancy:
    """Enter `room` as `nick` (asking for `history` messages); `JoinError` if refused,
    `TimeoutError` if the room does not answer."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Occupancy] = loop.create_future()

    def on_presence(stanza: Any) -> None:
        sender = stanza["from"]
        if str(sender.bare) != room or done.done():
            return
        if stanza["type"] == "error":
            error = stanza["error"]
            done.set_exception(JoinError(room, error["condition"] or "error", error["text"] or ""))
            return
        affiliation, role, _jid, codes = occupant_item(stanza.xml)
        if sender.resource != nick and (110 not in codes or stanza["type"] == "unavailable"):
            return  # another occupant's presence, or ours leaving under another nick
        if stanza["type"] == "unavailable":
            done.set_exception(JoinError(room, "gone", "the room removed us while joining"))
            return
        done.set_result(Occupancy(room, sender.resource, affiliation, role, codes))

    name = f"xmlrc-join-{next(_ids)}"
    client.register_handler(
        Callback(name, MatchXPath(f"{{{client.default_ns}}}presence"), on_presence)
    )
    try:
        presence = _presence(client, f"{room}/{nick}", ifrom=ifrom)
        x = presence.xml.makeelement(f"{{{MUC_NS}}}x", {})
        x.append(x.makeelement(f"{{{MUC_NS}}}history", {"maxstanzas": str(history)}))
        presence.xml.append(x)
        presence.send()
        return await asyncio.wait_for(done, timeout)
    finally:
        client.remove_handler(name)


def leave(client: Any, room: str, nick: str, *, ifrom: str | None = None) -> None:
    """Say "unavailable" to `room` (fire and forget)."""
    _presence(client, f"{room}/{nick}", ifrom=ifrom, ptype="unavailable").send()


async def get_config(
    client: Any, room: str, *, timeout: float, ifrom: str | None = None
) -> dict[str, list[str]]:
    """The room's configuration form (owners only): field var -> its values.
    Raises slixmpp's `IqError` (``forbidden``: we are not an owner) or `IqTimeout`."""
    iq = client.make_iq_get(
        MUC_OWNER_NS, ito=slixmpp.JID(room), ifrom=slixmpp.JID(ifrom) if ifrom else None
    )
    result = await iq.send(timeout=timeout)
    query = result.xml.find(f"{{{MUC_OWNER_NS}}}query")
    fields: dict[str, list[str]] = {}
    if query is None:
        return fields
    for form_field in query.iter(f"{{{DATA_NS}}}field"):
        var = form_field.get("var")
        if var:
            fields[var] = [v.text or "" for v in form_field.findall(f"{{{DATA_NS}}}value")]
    return fields


def form_value(value: bool | int | str) -> str:
    """A value as a data form carries it (booleans as 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


async def submit_config(
    client: Any,
    room: str,
    values: Mapping[str, bool | int | str],
    *,
    known: Iterable[str],
    timeout: float,
    ifrom: str | None = None,
) -> None:
    """Submit `values` for the fields the room's form has (`known`; others are skipped:
    servers differ in what they offer)."""
    known = set(known)
    iq = client.make_iq_set(ito=slixmpp.JID(room), ifrom=slixmpp.JID(ifrom) if ifrom else None)
    query = iq.xml.makeelement(f"{{{MUC_OWNER_NS}}}query", {})
    form = query.makeelement(f"{{{DATA_NS}}}x", {"type": "submit"})
    entries: list[tuple[str, str]] = []
    if "FORM_TYPE" in known:
        entries.append(("FORM_TYPE", ROOMCONFIG_FORM))
    entries.extend((var, form_value(value)) for var, value in values.items() if var in known)
    for var, text in entries:
        form_field = form.makeelement(f"{{{DATA_NS}}}field", {"var": var})
        value = form_field.makeelement(f"{{{DATA_NS}}}value", {})
        value.text = text
        form_field.append(value)
        form.append(form_field)
    query.append(form)
    iq.xml.append(query)
    await iq.send(timeout=timeout)


async def set_affiliation(
    client: Any,
    room: str,
    jid: str,
    affiliation: str,
    *,
    timeout: float,
    ifrom: str | None = None,
) -> None:
    """Make bare `jid` a member (``member``), or ``none``, ``admin``... of `room`."""
    iq = client.make_iq_set(ito=slixmpp.JID(room), ifrom=slixmpp.JID(ifrom) if ifrom else None)
    query = iq.xml.makeelement(f"{{{MUC_ADMIN_NS}}}query", {})
    query.append(
        query.makeelement(f"{{{MUC_ADMIN_NS}}}item", {"jid": jid, "affiliation": affiliation})
    )
    iq.xml.append(query)
    await iq.send(timeout=timeout)


async def room_info(
    client: Any, room: str, *, timeout: float, ifrom: str | None = None
) -> RoomInfo:
    """disco#info of `room`. Raises `IqError` (``item-not-found``: no such room) or
    `IqTimeout`. Asking does not create the room, unlike joining it."""
    iq = client.make_iq_get(
        DISCO_INFO_NS, ito=slixmpp.JID(room), ifrom=slixmpp.JID(ifrom) if ifrom else None
    )
    result = await iq.send(timeout=timeout)
    query = result.xml.find(f"{{{DISCO_INFO_NS}}}query")
    features: set[str] = set()
    name = None
    if query is not None:
        features = {f.get("var", "") for f in query.findall(f"{{{DISCO_INFO_NS}}}feature")}
        identity = query.find(f"{{{DISCO_INFO_NS}}}identity")
        if identity is not None:
            name = identity.get("name")
    return RoomInfo(room, frozenset(features), name)
