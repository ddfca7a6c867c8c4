"""Route: which rooms a change goes to. Pure code, no I/O."""

from .model import (
    ChangeFilter,
    FilteredRoom,
    RoomSpec,
    RoutingError,
    RoutingSettings,
    UnknownWikiError,
    WikiOverride,
)
from .router import Router

__all__ = [
    "ChangeFilter",
    "FilteredRoom",
    "RoomSpec",
    "Router",
    "RoutingError",
    "RoutingSettings",
    "UnknownWikiError",
    "WikiOverride",
]
