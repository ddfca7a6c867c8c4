"""Route: which rooms a change goes to. Pure code, no I/O."""

from .router import Router, RoutingError

__all__ = ["Router", "RoutingError"]
