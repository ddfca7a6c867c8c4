"""`RCClient`: join recent-change rooms and receive typed `RecentChange` objects.

    async with RCClient("me@example.org", "secret", ["enwiki@conference.example.org"]) as client:
        async for change in client.changes():
            print(change.title, change.diff_url)

The ``<rc>`` payload is read by the same decoder the bridge uses
(`xmlrc_emitter.wire`); duplicates (the same stable id seen again after a
resend) are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import slixmpp
from slixmpp.exceptions import PresenceError

from xmlrc_emitter.wire import DecodeError, RecentChange, change_from_element
from xmlrc_emitter.wire.rcxml import RC_TAG

log = logging.getLogger(__name__)

_ORIGIN_ID = "{urn:xmpp:sid:0}origin-id"
_STANZA_ID = "{urn:xmpp:sid:0}stanza-id"


class RCClientError(Exception):
    """The client cannot do its job: wrong password, unreachable server, unknown room."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One change as it arrived: the room it came from and the archive's id for it."""

    room: str
    change: RecentChange
    archive_id: str | None


class _Dedupe:
    """Remembers the last `size` stable ids (bounded, oldest forgotten first)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, key: str) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


class RCClient:
    def __init__(
        self,
        jid: str,
        password: str,
        rooms: Iterable[str],
        *,
        host: str | None = None,
        port: int = 5222,
        ca_file: str | None = None,
        verify_tls: bool = True,
        nick: str | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.jid = slixmpp.JID(jid)
        self.rooms = [str(slixmpp.JID(room).bare) for room in rooms]
        self.host = host or self.jid.domain
        self.port = port
        self.nick = nick or f"{self.jid.user}-{random.randrange(16**6):06x}"
        self.connect_timeout = connect_timeout
        self.decode_errors = 0
        self.duplicates = 0
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._dedupe = _Dedupe()
        self._closing = False
        self._ready: asyncio.Future[None] | None = None
        self._joins: set[asyncio.Task[None]] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._backoff = 1.0
        self.xmpp = self._make_client(password, ca_file, verify_tls)

    def _make_client(
        self, password: str, ca_file: str | None, verify_tls: bool
    ) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(str(self.jid), password)
        for plugin in ("xep_0030", "xep_0045", "xep_0359"):
            client.register_plugin(plugin)
        client.register_plugin("xep_0199", {"keepalive": True, "interval": 60, "timeout": 20})
        client.enable_direct_tls = False
        if ca_file:
            client.ca_certs = Path(ca_file)
        if not verify_tls:
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = ssl.CERT_NONE
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("failed_auth", self._on_failed_auth)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("groupchat_message", self._on_groupchat)
        return client

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> RCClient:
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
        """Connect, log in and join every room; raises `RCClientError` if that fails."""
        self._ready = asyncio.get_running_loop().create_future()
        self.xmpp.connect(self.host, self.port)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.connect_timeout)
        except TimeoutError:
            await self.close()
            raise RCClientError(
                f"no answer from {self.host}:{self.port} within {self.connect_timeout:.0f} s"
            ) from None
        except RCClientError:
            await self.close()
            raise

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._joins)
        if self._reconnect_task is not None:
            tasks.append(self._reconnect_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.xmpp.transport is not None:
            try:
                await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 5)
            except TimeoutError:
                self.xmpp.abort()
        else:
            self.xmpp.abort()

    # -- reading ----------------------------------------------------------------------

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Every change as it arrives, with its room, each stable id once."""
        while True:
            yield await self._queue.get()

    async def changes(self) -> AsyncIterator[RecentChange]:
        """Every change as it arrives, each stable id once."""
        async for delivery in self.deliveries():
            yield delivery.change

    # -- events -----------------------------------------------------------------------

    def _fail(self, error: RCClientError) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    def _on_failed_auth(self, _event: Any) -> None:
        self._fail(RCClientError(f"the server refused the password for {self.jid}"))

    def _on_connection_failed(self, event: Any) -> None:
        if self._ready is not None and not self._ready.done():
            self._fail(RCClientError(f"cannot connect to {self.host}:{self.port}: {event}"))
        else:
            self._schedule_reconnect()

    def _on_disconnected(self, _event: Any) -> None:
        if self._ready is not None and self._ready.done() and not self._closing:
            log.warning("disconnected; reconnecting")
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closing or (self._reconnect_task and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        await asyncio.sleep(self._backoff * random.uniform(0.5, 1.5))
        self._backoff = min(self._backoff * 2, 60.0)
        if not self._closing:
            self.xmpp.connect(self.host, self.port)

    def _on_session_start(self, _event: Any) -> None:
        self._backoff = 1.0
        self.xmpp.send_presence()
        task = asyncio.get_running_loop().create_task(self._join_all())
        self._joins.add(task)
        task.add_done_callback(self._joins.discard)

    async def _join_all(self) -> None:
        muc = self.xmpp.plugin["xep_0045"]
        for room in self.rooms:
            try:
                await muc.join_muc_wait(slixmpp.JID(room), self.nick, maxstanzas=0, timeout=20)
            except PresenceError as exc:
                condition = exc.condition or "error"
                self._fail(RCClientError(f"cannot join {room}: {condition}"))
                return
            except TimeoutError:
                self._fail(RCClientError(f"cannot join {room}: no answer"))
                return
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _on_groupchat(self, msg: Any) -> None:
        element = msg.xml.find(RC_TAG)
        if element is None:
            return
        room = str(msg["from"].bare)
        if room not in self.rooms:
            return
        try:
            change = change_from_element(element)
        except DecodeError as exc:
            self.decode_errors += 1
            log.warning("undecodable <rc> in %s: %s", room, exc)
            return
        origin = msg.xml.find(_ORIGIN_ID)
        key = origin.get("id") if origin is not None else None
        if not self._dedupe.first_time(key or change.stable_id):
            self.duplicates += 1
            return
        archive_id = None
        for stanza_id in msg.xml.findall(_STANZA_ID):
            if stanza_id.get("by") == room:
                archive_id = stanza_id.get("id")
        self._queue.put_nowait(Delivery(room=room, change=change, archive_id=archive_id))
