"""The data routing works on: rooms, filters, per-wiki overrides. Pure, no I/O.

Everything here is built once, when the config is loaded (regexes compiled,
lists turned into frozensets); a filtered room's conditions are
`xmlrc.filters.Conditions`, whose matcher is compiled then too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from xmlrc.filters import Conditions

#: A MUC room localpart we are willing to create: no @, /, spaces, quotes or colons.
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,127}")

UnknownWikis = Literal["create", "drop"]

#: The default room name template and room description (``rooms.room``,
#: ``rooms.description``); `RoomSettings` and `Router` both take them from here.
DEFAULT_ROOM = "{wiki}"
DEFAULT_DESCRIPTION = "Recent changes of {wiki}, from xmlrc"


class RoutingError(ValueError):
    """A change cannot be routed (its room name would not be a safe localpart)."""

    #: The counter label the bridge files the dropped datagram under.
    reason = "bad_room"


class UnknownWikiError(RoutingError):
    """The change is of a wiki the config does not list, and unknown wikis are dropped."""

    reason = "unknown_wiki"


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """A room the bridge publishes into, and how it configures it when it creates it."""

    jid: str
    title: str
    description: str
    members_only: bool = False
    #: Bare JIDs made members of a members-only room.
    members: tuple[str, ...] = ()


#: The name routing gave its filters before the one engine (`xmlrc.filters.Conditions`);
#: deprecated, kept while `udp2xmpp.route` exports it.
ChangeFilter = Conditions


@dataclass(frozen=True, slots=True)
class WikiOverride:
    """``[wikis.NAME]``: a known wiki, with whatever differs from the defaults."""

    #: The room's name (its JID's local part); default: from the ``rooms.room`` template.
    room: str | None = None
    title: str | None = None
    description: str | None = None
    #: Filled into changes that arrive without them (for links).
    server_url: str | None = None
    server_script_path: str | None = None
    #: A private wiki: its room admits only `members`, and its changes go to no
    #: shared room (not the all-wikis room, not a filtered room that does not name it).
    members_only: bool = False
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FilteredRoom:
    """``[[rooms.filtered]]``: a room of the changes that match `filter`."""

    room: str
    filter: Conditions
    title: str | None = None
    description: str | None = None
    members_only: bool = False
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """The routing part of the config, beyond the per-wiki template."""

    unknown_wikis: UnknownWikis = "create"
    #: The name of a room that gets every change of every public wiki, or None.
    all_room: str | None = None
    wikis: Mapping[str, WikiOverride] = field(default_factory=dict)
    filtered: tuple[FilteredRoom, ...] = ()
