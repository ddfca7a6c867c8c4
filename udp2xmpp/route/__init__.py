"""Route: which rooms a change goes to. Pure code, no I/O."""

from .router import RoomSpec, Router, RoutingError

__all__ = ["RoomSpec", "Router", "RoutingError"]
