"""Per-wiki routing: a change goes to its wiki's room, named from a template.

Pure: a change in, the `RoomSpec` of each room it goes to out. The wiki ID
was validated by the decoder; the room name built from it is checked again
here, so no datagram can ever address a JID outside the configured MUC
service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xmlrc_emitter.wire import RecentChange

# A MUC room localpart we are willing to create: no @, /, spaces, quotes or colons.
_ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,127}")


class RoutingError(ValueError):
    """A change cannot be routed (its room name would not be a safe localpart)."""


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """A room the bridge publishes into, and how it configures it when it creates it."""

    jid: str
    title: str
    description: str
    members_only: bool = False
    #: Bare JIDs made members of a members-only room.
    members: tuple[str, ...] = ()


class Router:
    def __init__(
        self,
        service: str,
        template: str = "{wiki}",
        description: str = "Recent changes of {wiki}, from xmlrc",
    ) -> None:
        self.service = service
        self.template = template
        self.description = description
        self._cache: dict[str, tuple[RoomSpec, ...]] = {}

    def rooms_for(self, change: RecentChange) -> tuple[RoomSpec, ...]:
        """The rooms `change` goes to."""
        rooms = self._cache.get(change.wiki)
        if rooms is None:
            rooms = (self.wiki_room(change.wiki),)
            if len(self._cache) < 10_000:  # bounded: wiki IDs come from the network
                self._cache[change.wiki] = rooms
        return rooms

    def wiki_room(self, wiki: str) -> RoomSpec:
        """The room of one wiki."""
        return RoomSpec(
            jid=self.room_jid(wiki), title=wiki, description=self.description.format(wiki=wiki)
        )

    def room_jid(self, wiki: str) -> str:
        name = self.template.format(wiki=wiki).lower()
        if not _ROOM_NAME.fullmatch(name):
            raise RoutingError(f"room name {name[:60]!r} for wiki {wiki[:60]!r} is not allowed")
        return f"{name}@{self.service}"
