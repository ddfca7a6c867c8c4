"""`RCClient`: join recent-change rooms and receive typed `RecentChange` objects.

    async with RCClient("me@example.org", "secret", ["enwiki@conference.example.org"]) as client:
        async for change in client.changes(type="edit", ns=0):
            print(change.title, change.diff_url)

The ``<rc>`` payload is read by the decoder the bridge uses
(`xmlrc.wire`). The client keeps its rooms through network trouble:

- it reconnects with exponential backoff and jitter, and rejoins its rooms;
- it checks that it is still in each room with XEP-0410 self-pings (every
  ``ping_interval`` seconds, and at once when the room says we left), and
  rejoins a room it was dropped from;
- after every (re)join it asks the room's archive (XEP-0313) for what came
  after the last change it received, so nothing in the archive window is
  missed; live messages that arrive meanwhile wait, so changes come in
  archive order;
- each stable id (``wiki/rcid``) is handed out once: what the archive and a
  resend bring again is dropped;
- when the archive no longer holds the last change received (expired,
  truncated, or lost by the server), a `Gap` says so, never a silent jump;
- with ``state_file``, the archive id of the last change handed out per room
  is saved (atomically, at most every ``state_interval`` seconds and on
  close), and a restarted program continues after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import ssl
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, overload

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.jid import InvalidJID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmlrc.wire import DecodeError, RecentChange, change_from_element
from xmlrc.wire.rcxml import RC_TAG

from .filters import ChangeFilter, FilterType, Predicate, build
from .state import StateError, StateFile

__all__ = ["Delivery", "Event", "Gap", "RCClient", "RCClientError"]

log = logging.getLogger(__name__)

_STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
_DELAY = "{urn:xmpp:delay}delay"
_MAM_RESULT = "{urn:xmpp:mam:2}result"
_FORWARDED_MESSAGE = "{urn:xmpp:forward:0}forwarded/{jabber:client}message"
#: Prosody answers at most 50 archived messages per query (max_archive_query_results).
_PAGE_SIZE = 50
#: A re-entry without a known archive id asks for what was archived since the
#: previous entry, minus this much (clock differences between client and server).
_CLOCK_MARGIN = timedelta(seconds=10)
#: Self-ping errors that mean "still joined" (XEP-0410 §4).
_STILL_JOINED = frozenset({"service-unavailable", "feature-not-implemented", "item-not-found"})
_UNKNOWN = frozenset({"remote-server-not-found", "remote-server-timeout"})


class RCClientError(Exception):
    """The client cannot do its job: wrong password, unreachable server, unknown room."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One change as it arrived: its room, and the room archive's id for it.

    ``replayed`` is True for a change fetched from the room's archive (after a
    reconnect, a resume or ``since``) rather than received live.
    """

    room: str
    change: RecentChange
    archive_id: str | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Gap:
    """Changes of `room` may be missing here: the archive could not fill the gap.

    ``last_seen_id`` is the archive id of the last change received from the
    room before the gap (None when unknown), ``last_seen_time`` that change's
    timestamp; ``next_id`` is the archive id of the first change handed out
    after the gap, when the archive still had some. ``reason`` says why, in
    words.
    """

    room: str
    last_seen_id: str | None
    reason: str
    last_seen_time: datetime | None = None
    next_id: str | None = None


Event = Delivery | Gap
_H = TypeVar("_H", bound=Callable[..., Any])


class _RoomError(RCClientError):
    """A room cannot be entered (no such room, refused)."""


class _LinkDead(Exception):
    """The server stopped answering: drop the connection and make a new one."""


@dataclass(frozen=True, slots=True)
class _Position:
    """Queue marker: an archived message that is not a change (the position still moves)."""

    room: str
    archive_id: str


@dataclass(frozen=True, slots=True)
class _Archived:
    archive_id: str | None
    message: ET.Element


class _Closed:
    """Queue marker: the client is closed; iterators end."""


_CLOSED: Final = _Closed()


@dataclass(eq=False)
class _Room:
    jid: str
    nick: str
    joined: bool = False  # in the room on the current connection
    live: bool = False  # catch-up done: live messages go straight out
    suspect: bool = False  # the room said we left: check with a self-ping
    buffer: list[_Archived] = field(default_factory=list)
    last_id: str | None = None  # archive id of the last message received
    last_time: datetime | None = None  # timestamp of the last change received
    joining_at: datetime | None = None  # when the current join began
    entered_at: datetime | None = None  # when the last completed entry began


@dataclass(frozen=True, slots=True)
class _Handler:
    func: Callable[[Any], Awaitable[None] | None]
    where: ChangeFilter | None


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


def _room_jid(room: str) -> str:
    try:
        jid = slixmpp.JID(room)
    except InvalidJID as exc:
        raise ValueError(f"not a room JID (room@service): {room!r}: {exc}") from None
    if not jid.user or not jid.domain or jid.resource:
        raise ValueError(f"not a room JID (room@service): {room!r}")
    return str(jid.bare)


class RCClient:
    """Reads changes from XMPP rooms; an async context manager.

    ``rooms`` are room JIDs. ``host``/``port`` default to the JID's domain and
    5222 (STARTTLS, verified against ``ca_file`` or the system's CAs).
    ``state_file`` enables resume across restarts; ``since`` (an aware
    datetime, or a timedelta before now) asks each room's archive for the
    changes since then on the first join of a room without a saved position.
    """

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
        state_file: str | Path | None = None,
        state_interval: float = 1.0,
        since: datetime | timedelta | None = None,
        ping_interval: float = 60.0,
        ping_timeout: float = 20.0,
        iq_timeout: float = 20.0,
        reconnect_delay: float = 1.0,
        reconnect_max_delay: float = 60.0,
        catch_up_limit: int = 50_000,
    ) -> None:
        self.jid = slixmpp.JID(jid)
        self.rooms = list(dict.fromkeys(_room_jid(room) for room in rooms))
        if not self.rooms:
            raise ValueError("RCClient needs at least one room")
        if isinstance(since, datetime) and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        self.host = host or self.jid.domain
        self.port = port
        self.nick = nick or f"{self.jid.user}-{random.randrange(16**6):06x}"
        self.connect_timeout = connect_timeout
        self.state_file = Path(state_file) if state_file is not None else None
        self.state_interval = state_interval
        self.since = since
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.iq_timeout = iq_timeout
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.catch_up_limit = catch_up_limit
        #: Counters: undecodable <rc> payloads, duplicates dropped, connections made, gaps.
        self.decode_errors = 0
        self.duplicates = 0
        self.connections = 0
        self.gaps = 0
        self._rooms = {jid: _Room(jid, self.nick) for jid in self.rooms}
        self._queue: asyncio.Queue[Delivery | Gap | _Position | _Closed] = asyncio.Queue()
        self._dedupe = _Dedupe()
        self._filter = ChangeFilter()
        self._change_handlers: list[_Handler] = []
        self._gap_handlers: list[_Handler] = []
        self._state: StateFile | None = None
        self._state_dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False
        self._since_time: datetime | None = None
        self._ready: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[str] | None = None
        self._session_number = 0
        self._online = False
        self._post_rooms: dict[str, int] = {}
        self.xmpp = self._make_client(password, ca_file, verify_tls)

    def _make_client(
        self, password: str, ca_file: str | None, verify_tls: bool
    ) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(str(self.jid), password)
        for plugin in ("xep_0004", "xep_0030", "xep_0045", "xep_0059", "xep_0199", "xep_0313"):
            client.register_plugin(plugin)
        client.enable_direct_tls = False
        if ca_file:
            client.ca_certs = Path(ca_file)
        if not verify_tls:
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = ssl.CERT_NONE
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("failed_auth", self._on_failed_auth)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("ssl_invalid_chain", self._on_invalid_certificate)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("groupchat_message", self._on_groupchat)
        client.add_event_handler("groupchat_presence", self._on_room_presence)
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
        """Connect, log in, join every room (and catch up); `RCClientError` if that fails.

        Fails for a wrong password, an unreachable server, a room that does
        not exist (checked with a disco#info query first: joining would
        create it on many servers) or refuses us, and an unreadable state
        file. After it returns, the client reconnects by itself.
        """
        if self._supervisor is not None:
            raise RuntimeError("connect() was already called")
        loop = asyncio.get_running_loop()
        self._load_state()
        if isinstance(self.since, timedelta):
            self._since_time = datetime.now(UTC) - self.since
        elif self.since is not None:
            self._since_time = self.since.astimezone(UTC)
        self._ready = loop.create_future()
        self._supervisor = loop.create_task(self._supervise(), name="rcclient connection")
        if self._state is not None:
            self._writer = loop.create_task(self._write_state_loop(), name="rcclient state")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.connect_timeout)
        except TimeoutError:
            await self.close()
            raise RCClientError(
                f"no answer from {self.host}:{self.port} within {self.connect_timeout:g} s"
            ) from None
        except RCClientError:
            await self.close()
            raise

    async def close(self) -> None:
        """Leave the rooms, disconnect, stop every task, save the state; iterators end."""
        if self._closed:
            return
        self._closing = True
        if self.xmpp.transport is not None and self._started is not None and self._started.done():
            for room in self._rooms.values():
                if room.joined:
                    self.xmpp.send_presence(pto=f"{room.jid}/{room.nick}", ptype="unavailable")
            try:
                await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 3)
            except TimeoutError:
                self.xmpp.abort()
        tasks = [task for task in (self._supervisor, self._writer) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drop_connection()
        filters_task = getattr(self.xmpp, "_run_out_filters", None)
        if isinstance(filters_task, asyncio.Future) and not filters_task.done():
            filters_task.cancel()
            await asyncio.gather(filters_task, return_exceptions=True)
        self._save_state()
        self._closed = True
        self._queue.put_nowait(_CLOSED)

    @property
    def connected(self) -> bool:
        """True while a session is up (the rooms may be being rejoined)."""
        return self._online and not self._closing

    # -- reading ----------------------------------------------------------------------

    def register_filter(
        self, *predicates: Predicate, ftype: FilterType = "all", **conditions: Any
    ) -> None:
        """Filter everything this client hands out, as pywikibot's ``register_filter``.

        ``client.register_filter(wiki="enwiki")``,
        ``client.register_filter(ftype="none", bot=True)``,
        ``client.register_filter(is_interesting, ftype="any")``: see `rcclient.filters`.
        """
        self._filter.register(*predicates, ftype=ftype, **conditions)

    async def events(
        self, *predicates: Predicate, **conditions: Any
    ) -> AsyncIterator[Delivery | Gap]:
        """Every `Delivery` (matching the filters) and every `Gap`, in order, until closed."""
        where = build(predicates, conditions)
        while (item := await self._next()) is not None:
            if isinstance(item, Delivery) and where is not None and not where(item.change):
                continue
            yield item

    async def deliveries(
        self, *predicates: Predicate, **conditions: Any
    ) -> AsyncIterator[Delivery]:
        """Every change matching the filters with its room, each stable id once."""
        where = build(predicates, conditions)
        while (item := await self._next()) is not None:
            if isinstance(item, Gap):
                if not self._gap_handlers:
                    log.warning("gap in %s: %s", item.room, item.reason)
                continue
            if where is None or where(item.change):
                yield item

    async def changes(
        self, *predicates: Predicate, **conditions: Any
    ) -> AsyncIterator[RecentChange]:
        """Every change matching the filters, each stable id once.

        ``changes(type="edit", ns=0)``, ``changes(lambda c: c.size_change and
        c.size_change < -500)``: keyword conditions and callables must all
        match; pass a `ChangeFilter` for ``any``/``none`` combinations.
        """
        async for delivery in self.deliveries(*predicates, **conditions):
            yield delivery.change

    @overload
    def on_change(
        self,
        handler: _H,
        /,
        *,
        where: Predicate | Iterable[Predicate] | None = None,
        **conditions: Any,
    ) -> _H: ...

    @overload
    def on_change(
        self,
        handler: None = None,
        /,
        *,
        where: Predicate | Iterable[Predicate] | None = None,
        **conditions: Any,
    ) -> Callable[[_H], _H]: ...

    def on_change(
        self,
        handler: _H | None = None,
        /,
        *,
        where: Predicate | Iterable[Predicate] | None = None,
        **conditions: Any,
    ) -> _H | Callable[[_H], _H]:
        """Register a handler (a function or coroutine function) for changes.

        ``@client.on_change``, ``@client.on_change(type="new", where=is_big)``,
        or ``client.on_change(handler, wiki="enwiki")``.
        Handlers run, in order, as each change is taken from the client by
        `run()` or by any iterator; an exception in one is logged.
        """
        predicates: tuple[Predicate, ...]
        if where is None:
            predicates = ()
        elif callable(where):
            predicates = (where,)
        else:
            predicates = tuple(where)
        flt = build(predicates, conditions)

        def register(func: _H) -> _H:
            self._change_handlers.append(_Handler(func, flt))
            return func

        return register(handler) if handler is not None else register

    def on_gap(self, handler: _H) -> _H:
        """Register a handler for `Gap` events (``@client.on_gap``)."""
        self._gap_handlers.append(_Handler(handler, None))
        return handler

    async def run(self) -> None:
        """Hand every change to the ``on_change`` handlers until the client is closed."""
        async for _ in self.deliveries():
            pass

    async def post(self, room: str, body: str) -> None:
        """Send `body` as a groupchat message to `room` (a bot's report room).

        Joins the room first (once per connection); where the server lets us
        create it, a new room is made with the server's default configuration.
        """
        if not self.connected:
            raise RCClientError("not connected")
        jid = _room_jid(room)
        muc = self.xmpp.plugin["xep_0045"]
        if self._post_rooms.get(jid) != self._session_number:
            try:
                joined = await muc.join_muc_wait(
                    slixmpp.JID(jid), self.nick, maxstanzas=0, timeout=self.iq_timeout
                )
            except PresenceError as exc:
                raise RCClientError(f"cannot join {jid}: {exc.condition or 'error'}") from None
            except TimeoutError:
                raise RCClientError(f"cannot join {jid}: no answer") from None
            if 201 in joined[0]["muc"]["status_codes"]:  # we created it: unlock it
                form = self.xmpp.plugin["xep_0004"].make_form(ftype="submit")
                with contextlib.suppress(IqError, IqTimeout):
                    await muc.set_room_config(jid, form, timeout=self.iq_timeout)
            self._post_rooms[jid] = self._session_number
        self.xmpp.send_message(mto=slixmpp.JID(jid), mbody=body, mtype="groupchat")

    async def _next(self) -> Delivery | Gap | None:
        """The next event for a consumer, after the handlers ran; None once closed."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)  # for the other consumers
                return None
            if isinstance(item, _Position):
                self._record(item.room, item.archive_id, None)
                continue
            if isinstance(item, Gap):
                for handler in self._gap_handlers:
                    await self._call(handler.func, item)
                return item
            self._record(item.room, item.archive_id, item.change.stable_id, item.change.timestamp)
            if not self._filter.empty and not self._filter(item.change):
                continue
            for handler in self._change_handlers:
                if handler.where is None or handler.where(item.change):
                    await self._call(handler.func, item.change)
            return item

    @staticmethod
    async def _call(func: Callable[[Any], Awaitable[None] | None], arg: Any) -> None:
        try:
            result = func(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("handler %s failed", getattr(func, "__qualname__", func))

    # -- resume state -----------------------------------------------------------------

    def _load_state(self) -> None:
        if self.state_file is None:
            return
        try:
            self._state = StateFile.load(self.state_file)
        except StateError as exc:
            raise RCClientError(str(exc)) from None
        for room in self._rooms.values():
            room.last_id = self._state.position(room.jid)
            room.last_time = self._state.timestamp(room.jid)
            for stable_id in self._state.recent(room.jid):
                self._dedupe.first_time(stable_id)

    def _record(
        self,
        room: str,
        archive_id: str | None,
        stable_id: str | None,
        timestamp: datetime | None = None,
    ) -> None:
        if self._state is not None:
            self._state.record(room, archive_id, stable_id, timestamp)
            self._state_dirty.set()

    def _save_state(self) -> None:
        if self._state is None or not self._state.dirty:
            return
        try:
            self._state.save()
        except StateError as exc:
            log.error("%s", exc)

    async def _write_state_loop(self) -> None:
        while True:
            await self._state_dirty.wait()
            await asyncio.sleep(self.state_interval)  # debounce: one write per interval
            self._state_dirty.clear()
            self._save_state()

    # -- connection -------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect; after a loss, wait (exponential backoff with jitter) and connect again."""
        assert self._ready is not None
        delay = self.reconnect_delay
        while not self._closing:
            try:
                reason, had_session = await self._connection()
            except Exception as exc:  # a bug must not end the reconnecting for good
                log.exception("connection failed unexpectedly")
                reason, had_session = f"internal error: {exc}", False
            if self._closing:
                return
            if not self._ready.done():
                self._ready.set_exception(RCClientError(reason))
                return
            if had_session:
                delay = self.reconnect_delay
            pause = delay * random.uniform(0.5, 1.5)
            log.warning("%s; reconnecting in %.1f s", reason, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self.reconnect_max_delay)

    async def _connection(self) -> tuple[str, bool]:
        """One connection, from connect() to its end; returns why it ended."""
        assert self._ready is not None
        loop = asyncio.get_running_loop()
        first = not self._ready.done()
        started: asyncio.Future[Any] = loop.create_future()
        ended: asyncio.Future[Any] = loop.create_future()
        self._started, self._ended = started, ended
        self.xmpp.connect(self.host, self.port)
        session: asyncio.Task[None] | None = None
        try:
            await asyncio.wait(
                {started, ended}, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if ended.done():
                return str(ended.result()), False
            if not started.done():
                return f"no answer from {self.host}:{self.port}", False
            self.connections += 1
            self._session_number += 1
            self._online = True
            session = loop.create_task(self._session(first), name="rcclient session")
            await asyncio.wait({session, ended}, return_when=asyncio.FIRST_COMPLETED)
            if session.done():
                error = session.exception()
                if isinstance(error, (RCClientError, _LinkDead)):
                    return str(error), True
                if error is not None:
                    raise error
                return "the session ended", True
            return str(ended.result()), True
        finally:
            if session is not None and not session.done():
                session.cancel()
                await asyncio.gather(session, return_exceptions=True)
            await self._drop_connection()

    async def _drop_connection(self) -> None:
        """Abort the socket (if any) and wait until slixmpp has seen it go."""
        self._online = False
        for room in self._rooms.values():
            room.joined = room.live = False
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            self.xmpp.abort()
        for _ in range(500):  # connection_lost runs on a later loop iteration
            if self.xmpp.transport is None:
                break
            await asyncio.sleep(0.01)

    def _end(self, reason: str) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(reason)

    def _on_session_start(self, _event: Any) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(None)

    def _on_failed_auth(self, _event: Any) -> None:
        self._end(f"the server refused the password for {self.jid.bare}")

    def _on_connection_failed(self, error: Any) -> None:
        self.xmpp.cancel_connection_attempt()  # we retry on our own schedule
        self._end(f"cannot connect to {self.host}:{self.port}: {error}")

    def _on_invalid_certificate(self, error: Any) -> None:
        self._end(f"the certificate of {self.host}:{self.port} is not trusted: {error}")

    def _on_disconnected(self, reason: Any) -> None:
        self._end(f"disconnected from {self.host}:{self.port}" + (f" ({reason})" if reason else ""))

    # -- rooms ------------------------------------------------------------------------

    async def _session(self, first: bool) -> None:
        """Join every room, then catch each up from its archive, then watch them."""
        self.xmpp.send_presence()
        for room in self._rooms.values():
            try:
                await self._join(room)
            except _RoomError as exc:
                if first:
                    raise
                log.warning("%s; trying again later", exc)
        if first:
            assert self._ready is not None
            self._ready.set_result(None)
        for room in self._rooms.values():
            if room.joined:
                await self._resume(room)
        await self._watch()

    async def _watch(self) -> None:
        """Self-ping the rooms now and then; rejoin the ones we were dropped from."""
        retry = self.reconnect_delay
        while True:  # until the connection ends (this task is then cancelled)
            missing = any(not room.joined for room in self._rooms.values())
            timeout = min(self.ping_interval, retry) if missing else self.ping_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            for room in self._rooms.values():
                if room.joined and not await self._self_ping(room):
                    log.warning("no longer in %s; rejoining", room.jid)
                    room.joined = room.live = False
                if not room.joined:
                    try:
                        await self._join(room)
                    except _RoomError as exc:
                        log.warning("%s; trying again in %.0f s", exc, retry)
                        continue
                    await self._resume(room)
            if any(not room.joined for room in self._rooms.values()):
                retry = min(retry * 2, self.reconnect_max_delay)
            else:
                retry = self.reconnect_delay

    async def _self_ping(self, room: _Room) -> bool:
        """XEP-0410: are we still in `room`? Raises `_LinkDead` when nothing answers."""
        suspect, room.suspect = room.suspect, False
        try:
            await self.xmpp.plugin["xep_0199"].send_ping(
                slixmpp.JID(f"{room.jid}/{room.nick}"), timeout=self.ping_timeout
            )
        except IqTimeout:
            raise _LinkDead(f"no answer to a ping within {self.ping_timeout:g} s") from None
        except IqError as exc:
            condition = exc.condition
            if condition in _UNKNOWN:
                return True  # the room's server is unreachable; ours is fine: ask later
            # After the room said we left, "item-not-found" means just that.
            return condition in _STILL_JOINED and not suspect
        return True

    async def _join(self, room: _Room) -> None:
        """Check that the room exists (joining would create it), then join it.

        Live messages are held back from here until `_resume` has caught up.
        """
        room.joined = room.live = False
        room.joining_at = datetime.now(UTC)
        jid = slixmpp.JID(room.jid)
        try:
            await self.xmpp.plugin["xep_0030"].get_info(jid=jid, timeout=self.iq_timeout)
        except IqError as exc:
            if exc.condition == "item-not-found":
                raise _RoomError(f"no such room: {room.jid}") from None
            raise _RoomError(f"cannot join {room.jid}: {exc.condition}") from None
        except IqTimeout:
            raise _LinkDead(f"no answer about {room.jid}") from None
        try:
            joined = await self.xmpp.plugin["xep_0045"].join_muc_wait(
                jid, room.nick, maxstanzas=0, timeout=self.iq_timeout
            )
        except PresenceError as exc:
            raise _RoomError(f"cannot join {room.jid}: {exc.condition or 'refused'}") from None
        except TimeoutError:
            raise _LinkDead(f"no answer joining {room.jid}") from None
        room.nick = joined[0]["from"].resource or room.nick
        room.joined = True
        room.suspect = False

    async def _resume(self, room: _Room) -> None:
        """Catch up from the archive, hand out the live messages held meanwhile, go live."""
        try:
            await self._catch_up(room)
        except IqTimeout:
            raise _LinkDead(f"no answer from the archive of {room.jid}") from None
        buffered, room.buffer = room.buffer, []
        for item in buffered:
            self._accept(room, item, replayed=False)
        room.live = True
        room.entered_at = room.joining_at
        log.info("in %s", room.jid)

    async def _catch_up(self, room: _Room) -> None:
        if room.last_id is not None:
            await self._fetch_after(room, after=room.last_id, start=None)
        elif room.entered_at is not None:  # a rejoin, and nothing archived seen so far
            await self._fetch_after(room, after=None, start=room.entered_at - _CLOCK_MARGIN)
        elif self._since_time is not None:
            await self._fetch_after(room, after=None, start=self._since_time)

    async def _fetch_after(self, room: _Room, *, after: str | None, start: datetime | None) -> None:
        """Page forward through the archive from `after` (or `start`) to its end."""
        fetched = 0
        for _page in range(self.catch_up_limit // _PAGE_SIZE + 1):
            try:
                items, complete = await self._archive_page(room.jid, after=after, start=start)
            except IqError as exc:
                if exc.condition == "item-not-found" and after is not None:
                    await self._archive_lost(room, after)
                else:
                    self._gap(room, f"the room's archive cannot be read ({exc.condition})")
                return
            for item in items:
                self._accept(room, item, replayed=True)
            fetched += len(items)
            if complete or not items or items[-1].archive_id is None:
                return
            after, start = items[-1].archive_id, None
        self._gap(
            room,
            f"stopped catching up after {fetched} changes (catch_up_limit); the rest of "
            "the archive up to now was skipped",
        )

    async def _archive_lost(self, room: _Room, last_id: str) -> None:
        """The archive forgot `last_id`: say so, then hand out what it still has."""
        reason = (
            f"the room's archive no longer holds the last change received ({last_id}): "
            "changes between it and the archive's oldest are missing"
        )
        pages: list[list[_Archived]] = []
        total = 0
        before = ""  # RSM <before/>: the last page
        try:
            for _page in range(self.catch_up_limit // _PAGE_SIZE + 1):
                items, complete = await self._archive_page(room.jid, before=before)
                if not items:
                    break
                pages.insert(0, items)
                total += len(items)
                first_id = items[0].archive_id
                if complete or total >= self.catch_up_limit or first_id is None:
                    break
                before = first_id
        except IqError as exc:
            reason += f", and the rest cannot be read ({exc.condition})"
        kept = [item for page in pages for item in page]
        self._gap(room, reason, next_id=kept[0].archive_id if kept else None)
        for item in kept:
            self._accept(room, item, replayed=True)

    async def _archive_page(
        self,
        room: str,
        *,
        after: str | None = None,
        before: str | None = None,
        start: datetime | None = None,
    ) -> tuple[list[_Archived], bool]:
        """One XEP-0313 query to the room (at most a page); returns (messages, complete)."""
        iq = self.xmpp.make_iq_set(ito=slixmpp.JID(room))
        query_id = iq["id"]
        iq["mam"]["queryid"] = query_id
        if start is not None:
            iq["mam"]["start"] = start
        iq["mam"]["rsm"]["max"] = str(_PAGE_SIZE)
        if after is not None:
            iq["mam"]["rsm"]["after"] = after
        if before is not None:
            iq["mam"]["rsm"]["before"] = before
        found: list[_Archived] = []

        def on_result(message: Any) -> None:
            result = message.xml.find(_MAM_RESULT)
            if result is None or result.get("queryid") != query_id:
                return
            if str(message["from"].bare) != room:
                return
            inner = result.find(_FORWARDED_MESSAGE)
            if inner is not None:
                found.append(_Archived(result.get("id"), inner))

        name = f"rcclient-mam-{query_id}"
        matcher = MatchXPath(f"{{jabber:client}}message/{_MAM_RESULT}")
        self.xmpp.register_handler(Callback(name, matcher, on_result))
        try:
            reply = await iq.send(timeout=self.iq_timeout)
        finally:
            self.xmpp.remove_handler(name)
        complete = reply["mam_fin"]["complete"] in ("true", "1")
        return found, complete

    def _gap(self, room: _Room, reason: str, next_id: str | None = None) -> None:
        self.gaps += 1
        log.info("gap in %s: %s", room.jid, reason)
        self._queue.put_nowait(
            Gap(
                room=room.jid,
                last_seen_id=room.last_id,
                reason=reason,
                last_seen_time=room.last_time,
                next_id=next_id,
            )
        )

    def _on_groupchat(self, msg: Any) -> None:
        room = self._rooms.get(str(msg["from"].bare))
        if room is None or self._closing:
            return
        if msg.xml.find(_DELAY) is not None:
            return  # room history sent on join: the archive is where history comes from
        archive_id = None
        for stanza_id in msg.xml.findall(_STANZA_ID):
            if stanza_id.get("by") == room.jid:
                archive_id = stanza_id.get("id")
        item = _Archived(archive_id, msg.xml)
        if room.live:
            self._accept(room, item, replayed=False)
        else:  # joining or catching up: handed out after the catch-up, in order
            room.buffer.append(item)

    def _accept(self, room: _Room, item: _Archived, *, replayed: bool) -> None:
        # Usually one <rc> a message; a busy room may carry several (each its own event).
        changes: list[RecentChange] = []
        for element in item.message.findall(RC_TAG):
            try:
                changes.append(change_from_element(element))
            except DecodeError as exc:
                self.decode_errors += 1
                log.warning("undecodable <rc> in %s: %s", room.jid, exc)
        if not changes:  # not a change (chat, subject...): the position moves on
            if item.archive_id is not None:
                room.last_id = item.archive_id
                self._queue.put_nowait(_Position(room.jid, item.archive_id))
            return
        if item.archive_id is not None:
            room.last_id = item.archive_id
        for change in changes:
            if not self._dedupe.first_time(change.stable_id):
                self.duplicates += 1
                continue
            room.last_time = change.timestamp
            self._queue.put_nowait(Delivery(room.jid, change, item.archive_id, replayed))

    def _on_room_presence(self, presence: Any) -> None:
        if presence["type"] != "unavailable" or self._closing:
            return
        room = self._rooms.get(str(presence["from"].bare))
        if room is not None and room.joined and presence["from"].resource == room.nick:
            room.suspect = True  # kicked, or the room went away: check now
            self._wake.set()
