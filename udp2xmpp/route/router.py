"""Per-wiki routing: a change goes to its wiki's room, named from a template.

Pure: a change in, bare room JIDs out. The wiki ID was validated by the
decoder; the room name built from it is checked again here, so no datagram
can ever address a JID outside the configured MUC service.
"""

from __future__ import annotations

import re

from xmlrc_emitter.wire import RecentChange

# A MUC room localpart we are willing to create: no @, /, spaces, quotes or colons.
_ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,127}")


class RoutingError(ValueError):
    """A change cannot be routed (its room name would not be a safe localpart)."""


class Router:
    def __init__(self, service: str, template: str = "{wiki}") -> None:
        self.service = service
        self.template = template
        self._cache: dict[str, tuple[str, ...]] = {}

    def rooms_for(self, change: RecentChange) -> tuple[str, ...]:
        """The bare JIDs of the rooms `change` goes to."""
        rooms = self._cache.get(change.wiki)
        if rooms is None:
            rooms = (self.room_jid(change.wiki),)
            if len(self._cache) < 10_000:  # bounded: wiki IDs come from the network
                self._cache[change.wiki] = rooms
        return rooms

    def room_jid(self, wiki: str) -> str:
        name = self.template.format(wiki=wiki).lower()
        if not _ROOM_NAME.fullmatch(name):
            raise RoutingError(f"room name {name[:60]!r} for wiki {wiki[:60]!r} is not allowed")
        return f"{name}@{self.service}"
