"""`NodeReader`: read a bridge's PubSub node (XEP-0060) as typed `RecentChange` objects.

    async with NodeReader("me@example.org", "secret", "pubsub.example.org", "enwiki") as node:
        for change in await node.fetch_last(20):      # what was published while away
            print("missed:", change.title)
        async for change in node:                      # then each new one, as it comes
            print(change.title, change.diff_url)

The bridge (``[pubsub]`` in its config) publishes each change on its wiki's
node and on an all-wikis node; the item id is the change's stable id and the
payload the ``<rc>`` element the rooms carry. The reader subscribes its bare
JID (the subscription stays on the server until `unsubscribe`), receives
each new item as an event notification, and can fetch the last N items.
Each stable id is handed out once. The connection is an `xmlrc.xmpp.Session`
(reconnecting with backoff and jitter, keepalive pings) and the requests are
`xmlrc.xmpp.pubsub`'s; after a lost connection it subscribes again and, with
``catch_up=N``, fetches the last N items and hands out those it has not
seen, so a short outage loses nothing the node still keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import slixmpp

from xmlrc.wire import DecodeError, RecentChange, change_from_element
from xmlrc.wire.rcxml import RC_TAG
from xmlrc.xmpp import pubsub as xep0060
from xmlrc.xmpp.session import CLIENT_PORT, Backoff, Endpoint, Session, SessionError

from .client import RCClientError

__all__ = ["NodeReader", "NodeReaderError"]

log = logging.getLogger(__name__)

PUBSUB_NS = xep0060.PUBSUB_NS
EVENT_NS = xep0060.EVENT_NS
#: Stable ids remembered to hand each change out once.
_SEEN = 100_000


class NodeReaderError(RCClientError):
    """The node cannot be read: wrong password, unreachable server, no such node, refused."""


class NodeReader:
    """Reads one PubSub node: subscribes, hands out each new change once, fetches the last
    ones; on a `Session` of its own (see the module docstring)."""

    def __init__(
        self,
        jid: str,
        password: str,
        service: str,
        node: str,
        *,
        host: str | None = None,
        port: int = CLIENT_PORT,
        ca_file: str | None = None,
        verify_tls: bool = True,
        subscribe: bool = True,
        catch_up: int = 0,
        timeout: float = 20.0,
        reconnect_delay: float = 1.0,
        reconnect_max_delay: float = 60.0,
        queue_size: int = 100_000,
    ) -> None:
        self.jid = slixmpp.JID(jid)
        self.service = slixmpp.JID(service)
        self.node = node
        self.host = host or self.jid.domain
        self.port = port
        self.subscribe_on_connect = subscribe
        self.catch_up = catch_up
        self.timeout = timeout
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        #: Counters: undecodable payloads, duplicates dropped, changes dropped (full queue),
        #: sessions made.
        self.decode_errors = 0
        self.duplicates = 0
        self.overflow = 0
        self.connections = 0
        self._queue: asyncio.Queue[RecentChange | None] = asyncio.Queue(maxsize=queue_size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._catch_up_task: asyncio.Task[None] | None = None
        self._closing = False
        endpoint = Endpoint(
            str(self.jid), password, self.host, port, ca_file=ca_file, verify_tls=verify_tls
        )
        self.session = Session(
            endpoint,
            connect_timeout=timeout,
            ping_timeout=timeout,
            backoff=Backoff(reconnect_delay, reconnect_max_delay),
        )
        xep0060.on_events(self.session.client, str(self.service), self._on_event)
        self.session.on_online(self._on_online)

    @property
    def xmpp(self) -> Any:
        """The slixmpp client under the session (for diagnostics and tests)."""
        return self.session.client

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> NodeReader:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, and subscribe to the node unless ``subscribe=False``.

        Raises `NodeReaderError` when the server or the node refuses us.
        """
        try:
            await self.session.start(wait=True)
        except SessionError as exc:
            raise NodeReaderError(str(exc)) from None
        if self.subscribe_on_connect:
            try:
                await self.subscribe()
            except NodeReaderError:
                await self.close()
                raise

    async def close(self, *, unsubscribe: bool = False) -> None:
        """Disconnect (optionally ending the subscription first); iterators end."""
        if self._closing:
            return
        if unsubscribe:
            with contextlib.suppress(NodeReaderError):
                await self.unsubscribe()
        self._closing = True
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
            await asyncio.gather(self._catch_up_task, return_exceptions=True)
        await self.session.stop()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    # -- reading ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[RecentChange]:
        return self.changes()

    async def changes(self) -> AsyncIterator[RecentChange]:
        """Each new change published on the node, once, until `close`."""
        while True:
            change = await self._queue.get()
            if change is None:
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(None)  # other iterators end too
                return
            yield change

    async def fetch_last(self, count: int) -> list[RecentChange]:
        """The last `count` items the node keeps, oldest first (they count as seen)."""
        items = await self._call(
            xep0060.fetch_items(
                self.session.client, str(self.service), self.node, count, timeout=self.timeout
            )
        )
        changes = [c for c in (self._decode(rc) for item in items for rc in item.iter(RC_TAG)) if c]
        for change in changes:
            self._first_time(change.stable_id)
        return changes

    async def subscribe(self) -> None:
        """Subscribe this account (its bare JID) to the node."""
        await self._call(
            xep0060.subscribe(
                self.session.client, str(self.service), self.node, self.jid.bare,
                timeout=self.timeout,
            )
        )  # fmt: skip

    async def unsubscribe(self) -> None:
        await self._call(
            xep0060.unsubscribe(
                self.session.client, str(self.service), self.node, self.jid.bare,
                timeout=self.timeout,
            )
        )  # fmt: skip

    @staticmethod
    async def _call(request: Any) -> Any:
        try:
            return await request
        except xep0060.PubSubError as exc:
            message = str(exc)
            if exc.condition == "timeout":
                message = message.removesuffix("timeout") + "no answer"
            raise NodeReaderError(message) from None

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, message: ET.Element) -> None:
        for item in xep0060.event_items(message, self.node):
            for rc in item.iter(RC_TAG):
                self._offer(self._decode(rc))

    def _decode(self, element: Any) -> RecentChange | None:
        try:
            return change_from_element(element)
        except (DecodeError, ValueError):
            self.decode_errors += 1
            return None

    def _offer(self, change: RecentChange | None) -> None:
        if change is None:
            return
        if not self._first_time(change.stable_id):
            self.duplicates += 1
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflow += 1

    def _first_time(self, stable_id: str) -> bool:
        if stable_id in self._seen:
            return False
        self._seen[stable_id] = None
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        return True

    # -- connection ------------------------------------------------------------------------

    def _on_online(self, _resumed: bool) -> None:
        self.connections += 1
        # Notifications to a bare JID go only to its available resources.
        self.session.client.send_presence()
        if self.connections > 1 and not self._closing:
            self._catch_up_task = asyncio.get_running_loop().create_task(self._after_reconnect())

    async def _after_reconnect(self) -> None:
        try:
            if self.subscribe_on_connect:
                await self.subscribe()
            if self.catch_up:
                result = await self._fetch_unseen(self.catch_up)
                for change in result:
                    try:
                        self._queue.put_nowait(change)
                    except asyncio.QueueFull:
                        self.overflow += 1
        except NodeReaderError as exc:
            log.warning("after reconnecting: %s", exc)

    async def _fetch_unseen(self, count: int) -> list[RecentChange]:
        seen_before = set(self._seen)
        return [c for c in await self.fetch_last(count) if c.stable_id not in seen_before]
