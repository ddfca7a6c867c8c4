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
Each stable id is handed out once. After a lost connection it reconnects
(backoff with jitter) and, with ``catch_up=N``, fetches the last N items and
hands out those it has not seen, so a short outage loses nothing the node
still keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmlrc.wire import DecodeError, RecentChange, change_from_element
from xmlrc.wire.rcxml import RC_TAG

from .client import RCClientError

__all__ = ["NodeReader", "NodeReaderError"]

log = logging.getLogger(__name__)

PUBSUB_NS = "http://jabber.org/protocol/pubsub"
EVENT_NS = "http://jabber.org/protocol/pubsub#event"
#: Stable ids remembered to hand each change out once.
_SEEN = 100_000


class NodeReaderError(RCClientError):
    """The node cannot be read: wrong password, unreachable server, no such node, refused."""


class NodeReader:
    def __init__(
        self,
        jid: str,
        password: str,
        service: str,
        node: str,
        *,
        host: str | None = None,
        port: int = 5222,
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
        self._session: asyncio.Future[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._catch_up_task: asyncio.Task[None] | None = None
        self._closing = False
        self._backoff = reconnect_delay
        self.xmpp = self._make_client(password, ca_file, verify_tls)

    def _make_client(
        self, password: str, ca_file: str | None, verify_tls: bool
    ) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(str(self.jid), password)
        client.enable_direct_tls = False
        if ca_file:
            client.ca_certs = Path(ca_file)
        if not verify_tls:
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = ssl.CERT_NONE
        client.register_handler(
            Callback(
                "xmlrc pubsub events",
                MatchXPath(f"{{jabber:client}}message/{{{EVENT_NS}}}event"),
                self._on_event,
            )
        )
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("failed_auth", self._on_failed_auth)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("disconnected", self._on_disconnected)
        return client

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
        await self._connect_once()
        if self.subscribe_on_connect:
            try:
                await self.subscribe()
            except NodeReaderError:
                await self.close()
                raise

    async def _connect_once(self) -> None:
        self._session = asyncio.get_running_loop().create_future()
        self.xmpp.connect(self.host, self.port)
        try:
            await asyncio.wait_for(asyncio.shield(self._session), self.timeout)
        except TimeoutError:
            self.xmpp.abort()
            raise NodeReaderError(
                f"no XMPP session with {self.host}:{self.port} within {self.timeout:g} s"
            ) from None
        except NodeReaderError:
            self.xmpp.abort()
            raise

    async def close(self, *, unsubscribe: bool = False) -> None:
        """Disconnect (optionally ending the subscription first); iterators end."""
        if self._closing:
            return
        if unsubscribe:
            with contextlib.suppress(NodeReaderError):
                await self.unsubscribe()
        self._closing = True
        for task in (self._reconnect, self._catch_up_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 5)
        self.xmpp.abort()
        for _ in range(3):  # let slixmpp's own tasks finish being cancelled
            await asyncio.sleep(0)
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
        iq = self.xmpp.make_iq_get(ito=self.service)
        pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}items", {"node": self.node, "max_items": str(count)})
        result = await self._send(iq, "fetch the items of")
        changes = [c for c in (self._decode(rc) for rc in result.xml.iter(RC_TAG)) if c]
        for change in changes:
            self._first_time(change.stable_id)
        return changes

    async def subscribe(self) -> None:
        """Subscribe this account (its bare JID) to the node."""
        iq = self.xmpp.make_iq_set(ito=self.service)
        pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(
            pubsub, f"{{{PUBSUB_NS}}}subscribe", {"node": self.node, "jid": self.jid.bare}
        )
        await self._send(iq, "subscribe to")

    async def unsubscribe(self) -> None:
        iq = self.xmpp.make_iq_set(ito=self.service)
        pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB_NS}}}pubsub")
        attrs = {"node": self.node, "jid": self.jid.bare}
        ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}unsubscribe", attrs)
        await self._send(iq, "unsubscribe from")

    async def _send(self, iq: Any, what: str) -> Any:
        try:
            return await iq.send(timeout=self.timeout)
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            raise NodeReaderError(
                f"cannot {what} node {self.node!r} on {self.service}: {condition}"
            ) from None
        except IqTimeout:
            raise NodeReaderError(
                f"cannot {what} node {self.node!r} on {self.service}: no answer"
            ) from None

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, msg: Any) -> None:
        # Read the raw element: slixmpp's stanza iterators share their position, and
        # iterating them inside its own pubsub handlers never ends.
        if msg["from"].bare != self.service.bare:
            return
        for items in msg.xml.iter(f"{{{EVENT_NS}}}items"):
            if items.get("node") != self.node:
                continue
            for rc in items.iter(RC_TAG):
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

    def _on_session_start(self, _event: Any) -> None:
        self.connections += 1
        self._backoff = self.reconnect_delay
        self.xmpp.send_presence()  # notifications to the bare JID go to available resources
        if self._session is not None and not self._session.done():
            self._session.set_result(None)
        elif self.connections > 1 and not self._closing:
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

    def _on_failed_auth(self, _event: Any) -> None:
        if self._session is not None and not self._session.done():
            self._session.set_exception(NodeReaderError(f"the server refused {self.jid.bare}"))

    def _on_connection_failed(self, error: Any) -> None:
        if self._session is not None and not self._session.done():
            self._session.set_exception(
                NodeReaderError(f"cannot connect to {self.host}:{self.port}: {error}")
            )
        elif not self._closing:
            self._schedule_reconnect()

    def _on_disconnected(self, _event: Any) -> None:
        if not self._closing and self._session is not None and self._session.done():
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._reconnect is not None and not self._reconnect.done():
            return
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_later())

    async def _reconnect_later(self) -> None:
        delay = self._backoff * random.uniform(0.5, 1.5)
        self._backoff = min(self._backoff * 2, self.reconnect_max_delay)
        await asyncio.sleep(delay)
        if not self._closing:
            self.xmpp.connect(self.host, self.port)
