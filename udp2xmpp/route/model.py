"""The data routing works on: rooms, filters, per-wiki overrides. Pure, no I/O.

Everything here is built once, when the config is loaded (regexes compiled,
lists turned into frozensets), so matching a change costs a few attribute
reads and set lookups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from xmlrc.wire import RecentChange

#: A MUC room localpart we are willing to create: no @, /, spaces, quotes or colons.
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,127}")

UnknownWikis = Literal["create", "drop"]


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


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """Which changes a filtered room takes. ``None`` means "any"; all given keys must match.

    Within one key, any listed value matches (``types={"new", "edit"}``).
    """

    wikis: frozenset[str] | None = None
    types: frozenset[str] | None = None
    namespaces: frozenset[int] | None = None
    bot: bool | None = None
    minor: bool | None = None
    users: frozenset[str] | None = None
    #: Searched (not anchored) in the page title, as the wiki shows it ("Talk:Foo bar").
    title_regex: re.Pattern[str] | None = None
    #: Bounds on `RecentChange.size_change` (bytes, inclusive); a change of unknown
    #: size (a log action) never matches a filter that has either bound.
    min_change: int | None = None
    max_change: int | None = None

    def matches(self, change: RecentChange) -> bool:
        if self.wikis is not None and change.wiki not in self.wikis:
            return False
        if self.types is not None and change.type not in self.types:
            return False
        if self.namespaces is not None and change.ns not in self.namespaces:
            return False
        if self.bot is not None and change.bot != self.bot:
            return False
        if self.minor is not None and change.minor != self.minor:
            return False
        if self.users is not None and change.user not in self.users:
            return False
        if self.min_change is not None or self.max_change is not None:
            size = change.size_change
            if size is None:
                return False
            if self.min_change is not None and size < self.min_change:
                return False
            if self.max_change is not None and size > self.max_change:
                return False
        return self.title_regex is None or self.title_regex.search(change.title) is not None

    @property
    def is_empty(self) -> bool:
        """True when the filter has no condition (it would take every change)."""
        return self == ChangeFilter()

    def describe(self) -> str:
        """The conditions in words, for a room's default description."""
        parts: list[str] = []
        if self.wikis is not None:
            parts.append("wiki " + "|".join(sorted(self.wikis)))
        if self.types is not None:
            parts.append("type " + "|".join(sorted(self.types)))
        if self.namespaces is not None:
            parts.append("ns " + "|".join(str(ns) for ns in sorted(self.namespaces)))
        if self.bot is not None:
            parts.append("bot" if self.bot else "not bot")
        if self.minor is not None:
            parts.append("minor" if self.minor else "not minor")
        if self.users is not None:
            parts.append("user " + "|".join(sorted(self.users)))
        if self.title_regex is not None:
            parts.append(f"title ~ /{self.title_regex.pattern}/")
        if self.min_change is not None:
            parts.append(f"size change >= {self.min_change:+d}")
        if self.max_change is not None:
            parts.append(f"size change <= {self.max_change:+d}")
        return ", ".join(parts) or "every change"


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
    filter: ChangeFilter
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
