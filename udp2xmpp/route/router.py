"""Routing: which rooms a change goes to, and the change as it is published there.

Pure: a change in, the change (with server fields a wiki override supplies)
and the `RoomSpec` of each room it goes to out. A change goes to its wiki's
room (from the template, or the wiki's override), to the all-wikis room if
there is one, and to every filtered room whose filter it matches.

The wiki ID was validated by the decoder; the room name built from it is
checked again here, so no datagram can ever address a JID outside the
configured MUC service, nor a room the config reserves for something else
(another wiki's, the all-wikis room, a filtered room).

Everything that does not depend on the change is worked out once, in the
constructor, per known wiki (and cached per unknown wiki), so `route` costs a
dict lookup plus the filters that could apply to that wiki.

`Router.from_settings` takes any `RoomsConfig` (the config's `RoomSettings` is
one), so this module does not import the config module, which imports it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from xmlrc.filters import Conditions
from xmlrc.wire import RecentChange
from xmlrc.wire.model import FIELD_NAMES

from .model import (
    DEFAULT_DESCRIPTION,
    DEFAULT_ROOM,
    ROOM_NAME,
    RoomSpec,
    RoutingError,
    RoutingSettings,
    UnknownWikiError,
    WikiOverride,
)

ALL_ROOM_TITLE = "All wikis"
ALL_ROOM_DESCRIPTION = "Recent changes of every wiki, from xmlrc"
#: Unknown wikis whose plan is cached; wiki IDs come from the network.
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class _Plan:
    """What routing one wiki's changes needs, worked out before any change arrives."""

    #: The wiki's room, then the all-wikis room (when it takes this wiki).
    rooms: tuple[RoomSpec, ...]
    #: The filtered rooms that may take this wiki's changes, in config order.
    filtered: tuple[tuple[Conditions, RoomSpec], ...]
    #: (field, value) pairs set on a change that lacks the field.
    fill: tuple[tuple[str, str], ...]


class RoomsConfig(Protocol):
    """The ``[rooms]`` values a router is built from (`udp2xmpp.config.RoomSettings`)."""

    @property
    def service(self) -> str: ...
    @property
    def room(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def wikis(self) -> Iterable[str]: ...
    @property
    def routing(self) -> RoutingSettings: ...


class Router:
    """Decides the rooms each change goes to, from the rooms config, worked out up front."""

    def __init__(
        self,
        service: str,
        template: str = DEFAULT_ROOM,
        description: str = DEFAULT_DESCRIPTION,
        *,
        known_wikis: Iterable[str] = (),
        routing: RoutingSettings | None = None,
    ) -> None:
        """Raises `RoutingError`, its message starting with the config key, when two
        things would share a room or a room name is not allowed."""
        self.service = service
        self.template = template
        self.description = description
        self.routing = routing = routing or RoutingSettings()
        self.unknown_wikis = routing.unknown_wikis
        overrides = routing.wikis
        owners: dict[str, str] = {}  # room JID -> what it is, for collision messages

        def claim(jid: str, owner: str, key: str) -> None:
            if jid in owners:
                name = jid.partition("@")[0]
                raise RoutingError(f"{key}: room {name!r} is already the room of {owners[jid]}")
            owners[jid] = owner

        known = list(dict.fromkeys([*known_wikis, *overrides]))
        wiki_rooms: dict[str, RoomSpec] = {}
        for wiki in known:
            override = overrides.get(wiki)
            key = f"wikis.{wiki}" if override is not None else "rooms.wikis"
            if override is not None and override.room is not None:
                jid = self._jid(override.room, f"{key}.room")
            else:
                try:
                    jid = self.room_jid(wiki)
                except RoutingError as exc:
                    raise RoutingError(f"{key}: {exc} (from rooms.room)") from None
            claim(jid, f"wiki {wiki}", f"{key}.room" if override is not None else key)
            given = override or WikiOverride()
            wiki_rooms[wiki] = RoomSpec(
                jid=jid,
                title=given.title or wiki,
                description=given.description or description.format(wiki=wiki),
                members_only=given.members_only,
                members=given.members,
            )

        self.all_room: RoomSpec | None = None
        if routing.all_room is not None:
            jid = self._jid(routing.all_room, "rooms.all_room")
            claim(jid, "rooms.all_room", "rooms.all_room")
            self.all_room = RoomSpec(jid, ALL_ROOM_TITLE, ALL_ROOM_DESCRIPTION)

        filtered: list[tuple[Conditions, RoomSpec]] = []
        for index, room in enumerate(routing.filtered):
            key = f"rooms.filtered[{index}]"
            jid = self._jid(room.room, f"{key}.room")
            claim(jid, key, f"{key}.room")
            for wiki in sorted(room.filter.wikis or ()):
                if wiki in overrides and overrides[wiki].members_only and not room.members_only:
                    raise RoutingError(
                        f"{key}.wiki: {wiki} is a members-only wiki; "
                        "a room that takes its changes must be members_only too"
                    )
                if wiki not in wiki_rooms and self.unknown_wikis == "drop":
                    raise RoutingError(
                        f'{key}.wiki: {wiki} is not a known wiki and rooms.unknown_wikis = "drop"'
                    )
            spec = RoomSpec(
                jid=jid,
                title=room.title or room.room,
                description=room.description
                or f"Recent changes: {room.filter.describe()}, from xmlrc",
                members_only=room.members_only,
                members=room.members,
            )
            filtered.append((room.filter, spec))
        self.filtered: tuple[tuple[Conditions, RoomSpec], ...] = tuple(filtered)
        #: Rooms no unknown wiki may be routed to (they belong to something in the config).
        self.reserved: frozenset[str] = frozenset(owners)

        self._plans: dict[str, _Plan] = {
            wiki: self._plan(wiki, spec, overrides.get(wiki)) for wiki, spec in wiki_rooms.items()
        }
        self._unknown: dict[str, _Plan] = {}
        self.static_rooms: tuple[RoomSpec, ...] = (
            *wiki_rooms.values(),
            *((self.all_room,) if self.all_room else ()),
            *(spec for _f, spec in self.filtered),
        )
        """Every room the config names: the bridge creates and joins them at startup."""

    @classmethod
    def from_settings(cls, rooms: RoomsConfig) -> Router:
        return cls(
            rooms.service,
            rooms.room,
            rooms.description,
            known_wikis=rooms.wikis,
            routing=rooms.routing,
        )

    # -- the hot path -------------------------------------------------------------------

    def route(self, change: RecentChange) -> tuple[RecentChange, tuple[RoomSpec, ...]]:
        """The change to publish (server fields filled in) and the rooms it goes to.

        Raises `UnknownWikiError` for a wiki the config does not list when unknown
        wikis are dropped, and `RoutingError` when its room name is not allowed.
        """
        plan = self._plans.get(change.wiki)
        if plan is None:
            plan = self._unknown.get(change.wiki) or self._unknown_plan(change.wiki)
        if plan.fill:
            missing = [(name, value) for name, value in plan.fill if _lacks(change, name)]
            if missing:
                change = _with_fields(change, missing)
        rooms = plan.rooms
        if plan.filtered:
            matched = tuple(spec for match, spec in plan.filtered if match.matches(change))
            if matched:
                rooms += matched
        return change, rooms

    def rooms_for(self, change: RecentChange) -> tuple[RoomSpec, ...]:
        """The rooms `change` goes to."""
        return self.route(change)[1]

    # -- rooms --------------------------------------------------------------------------

    def wiki_room(self, wiki: str) -> RoomSpec:
        """The room of one wiki (known or not)."""
        plan = self._plans.get(wiki)
        if plan is not None:
            return plan.rooms[0]
        return RoomSpec(
            jid=self.room_jid(wiki), title=wiki, description=self.description.format(wiki=wiki)
        )

    def room_jid(self, wiki: str) -> str:
        """The room JID the template gives `wiki`."""
        name = self.template.format(wiki=wiki).lower()
        if not ROOM_NAME.fullmatch(name):
            raise RoutingError(f"room name {name[:60]!r} for wiki {wiki[:60]!r} is not allowed")
        return f"{name}@{self.service}"

    def _jid(self, name: str, key: str) -> str:
        if not ROOM_NAME.fullmatch(name):
            raise RoutingError(
                f"{key}: {name[:60]!r} is not an allowed room name "
                "(lower-case letters, digits, '.', '_', '-'; at most 128)"
            )
        return f"{name}@{self.service}"

    def _plan(self, wiki: str, own: RoomSpec, override: WikiOverride | None) -> _Plan:
        private = own.members_only
        rooms = (own,) if private or self.all_room is None else (own, self.all_room)
        filtered = tuple(
            (f, spec)
            for f, spec in self.filtered
            # A private wiki's changes go only where the config names the wiki.
            if (f.wikis is None and not private) or (f.wikis is not None and wiki in f.wikis)
        )
        fill: list[tuple[str, str]] = []
        given = override or WikiOverride()
        server_url, script_path = given.server_url, given.server_script_path
        if server_url:
            fill.append(("server_url", server_url))
            host = urlsplit(server_url).hostname
            if host:
                fill.append(("server_name", host))
        if script_path is not None:
            fill.append(("server_script_path", script_path))
        return _Plan(rooms, filtered, tuple(fill))

    def _unknown_plan(self, wiki: str) -> _Plan:
        if self.unknown_wikis == "drop":
            raise UnknownWikiError(f"wiki {wiki[:60]!r} is not in the config")
        jid = self.room_jid(wiki)
        if jid in self.reserved:
            raise RoutingError(
                f"room {jid.partition('@')[0]!r} of unknown wiki {wiki[:60]!r} is reserved"
            )
        own = RoomSpec(jid=jid, title=wiki, description=self.description.format(wiki=wiki))
        rooms = (own,) if self.all_room is None else (own, self.all_room)
        filtered = tuple(
            (f, spec) for f, spec in self.filtered if f.wikis is None or wiki in f.wikis
        )
        plan = _Plan(rooms, filtered, ())
        if len(self._unknown) < _CACHE_LIMIT:
            self._unknown[wiki] = plan
        return plan


def _lacks(change: RecentChange, name: str) -> bool:
    """True when the change does not give this server field ("" is a script path: the
    root). The host name is filled only along with the URL it comes from."""
    if name == "server_name" and change.server_url:
        return False
    value = getattr(change, name)
    return value is None or (value == "" and name != "server_script_path")


# A copy of a RecentChange with a few fields set, at a third of the cost of
# dataclasses.replace (which re-runs __init__ over all 35 fields): read every
# slot at once, write them into a bare instance. The source is a valid change,
# so nothing needs checking again.
_read_all = operator.attrgetter(*FIELD_NAMES)
_slots = [getattr(RecentChange, name) for name in FIELD_NAMES]
_setters = (
    [slot.__set__ for slot in _slots]
    if all(type(slot).__name__ == "member_descriptor" for slot in _slots)
    else None
)


def _with_fields(change: RecentChange, updates: Sequence[tuple[str, str]]) -> RecentChange:
    if _setters is None:  # RecentChange without __slots__: the plain way
        return change.with_changes(**dict(updates))
    copy = object.__new__(RecentChange)
    for setter, value in zip(_setters, _read_all(change), strict=True):
        setter(copy, value)
    for name, value in updates:
        object.__setattr__(copy, name, value)
    return copy
