"""rcclient: receive wiki recent changes from XMPP rooms as typed objects."""

from xmlrc_emitter.wire import RecentChange

from .client import Delivery, RCClient, RCClientError

__all__ = ["Delivery", "RCClient", "RCClientError", "RecentChange"]
