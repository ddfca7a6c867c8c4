"""`Feed`: what a source other than UDP (EventStreams, Redis) gives the bridge.

A feed decodes what it reads with the one wire format (`xmlrc.wire`) and hands
each change to the bridge's `accept(change, origin)`, which routes, encodes
and queues it exactly as for a datagram. The bridge starts and stops its
feeds, asks them for their health (``/healthz``) and their metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import Metric

from xmlrc.wire import RecentChange

__all__ = ["Accept", "Feed"]

#: The bridge's intake: route, encode and queue a change; False when refused (counted).
Accept = Callable[[RecentChange, str], bool]


class Feed(Protocol):
    """A source of changes the bridge runs beside its UDP sockets."""

    @property
    def name(self) -> str: ...

    async def start(self, accept: Accept) -> None:
        """Begin reading in the background; return at once."""
        ...

    async def stop(self) -> None:
        """Stop reading, save any resume position; never raises."""
        ...

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the feed is receiving as it should, and what ``/healthz`` shows of it."""
        ...

    def collect_metrics(self) -> Iterator[Metric]:
        """Its own metric families (``udp2xmpp_<name>_...``)."""
        ...
