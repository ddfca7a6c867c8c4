"""`RCClient`: join recent-change rooms and receive typed `RecentChange` objects.

    async with RCClient("me@example.org", "secret", ["enwiki@conference.example.org"]) as client:
        async for change in client.changes(type="edit", ns=0):
            print(change.title, change.diff_url)

The client is a user of the shared XMPP layer (`xmlrc.xmpp`): the stream,
TLS, reconnecting with backoff and jitter and the server keepalive are
`Session`'s; joining and disco#info are `muc`'s; "am I still in the room?"
is `selfping`'s one XEP-0410 verdict table; catch-up pages are `archive`'s.
What this module adds on top, per room:

- **trust**: only the bridge speaks for a room. A change is accepted only
  from the publisher's occupant nick (``publisher``, default ``rcbot``);
  live, that occupant must also hold the room's ``owner`` affiliation, and
  where the room shows real JIDs, be one of ``publisher_jid`` when given (a
  bridge pair has two accounts; the rule is `rcclient.trust`'s).
  Archived messages are held to the nick rule, and to the affiliation and
  JID rules where the archive records them (non-anonymous rooms). Anything
  else is dropped and counted (`forged`). Before each join the room must be
  moderated (only the owner has voice): refused by default
  (``require_moderated``), else warned about;
- **catch-up**: after every (re)join, the room's archive (XEP-0313) is asked
  for what came after the last message received, so nothing in the archive
  window is missed; live messages that arrive meanwhile wait, so changes come
  in archive order;
- **each stable id once per room** (``wiki/rcid``): what the archive and a
  resend bring again is dropped. Each room has its own memory, so ids posted
  in one room never hide the changes of another;
- **gaps**: when the archive no longer holds the last message received
  (expired, truncated, or lost by the server), a `Gap` says so, never a
  silent jump;
- **robust decoding**: a payload that cannot be decoded, or holds a value out
  of range, is counted (`decode_errors`) and skipped; the position moves on;
- **resume**: with ``state_file``, the archive id of the last change handed
  out per room is saved (atomically, at most every ``state_interval`` seconds
  and on close), and a restarted program continues after it.

Every background task (the per-connection room task, the state writer) is
owned by a `Supervisor` and cancelled by `close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, overload

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import InvalidJID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmlrc.tasks import Supervisor
from xmlrc.wire import RecentChange, change_from_element
from xmlrc.wire.rcxml import DECODE_FAILURES, RC_TAG
from xmlrc.xmpp import muc
from xmlrc.xmpp.archive import ArchivedMessage, query_page
from xmlrc.xmpp.muc import PUBLISHER_NICK
from xmlrc.xmpp.selfping import Verdict, self_ping
from xmlrc.xmpp.session import CLIENT_PORT, Backoff, Endpoint, Session, SessionError

from .filters import ChangeFilter, FilterType, Predicate, build
from .state import StateError, StateFile
from .trust import jid_distrust, publisher_jids

__all__ = ["Delivery", "Event", "Gap", "RCClient", "RCClientError"]

log = logging.getLogger(__name__)

_STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
_DELAY = "{urn:xmpp:delay}delay"
_MUC_USER_ITEM = f"{{{muc.MUC_USER_NS}}}x/{{{muc.MUC_USER_NS}}}item"
#: Prosody answers at most 50 archived messages per query (max_archive_query_results).
_PAGE_SIZE = 50
#: A re-entry without a known archive id asks for what was archived since the
#: previous entry, minus this much (clock differences between client and server).
_CLOCK_MARGIN = timedelta(seconds=10)
#: Caught at the boundary, so one stored message can never end a session or its catch-up.
_DECODE_FAILURES = DECODE_FAILURES
#: At most one "dropped a forged change" warning per room in this many seconds.
_FORGED_LOG_INTERVAL = 60.0


class RCClientError(Exception):
    """The client cannot do its job: wrong password, unreachable server, unknown room,
    a room that is not moderated (with ``require_moderated``)."""


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
    """A room cannot be entered (no such room, refused, not moderated)."""


class _LinkDead(Exception):
    """The server stopped answering: drop the connection and make a new one."""


@dataclass(frozen=True, slots=True)
class _Position:
    """Queue marker: an archived message that is not a change (the position still moves)."""

    room: str
    archive_id: str


@dataclass(frozen=True, slots=True)
class _Received:
    """A message of a room, live or archived, with what the trust rules said of it:
    None when its sender is the publisher, else why it is not."""

    archive_id: str | None
    message: ET.Element
    distrust: str | None


class _Closed:
    """Queue marker: the client is closed; iterators end."""


_CLOSED: Final = _Closed()


class _Dedupe:
    """Remembers the last `size` keys (bounded, oldest forgotten first)."""

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

    def __contains__(self, key: str) -> bool:
        return key in self._seen


@dataclass(frozen=True, slots=True)
class _Occupant:
    affiliation: str
    jid: str | None  # bare; None where the room hides real JIDs from us


@dataclass(eq=False)
class _Room:
    """What the client knows of one room it reads (see `RCClient`)."""

    jid: str
    nick: str
    joined: bool = False  # in the room on the current connection
    live: bool = False  # catch-up done: live messages go straight out
    moderated: bool | None = None  # what the room said before the last join
    buffer: list[_Received] = field(default_factory=list)
    last_id: str | None = None  # archive id of the last message received
    last_time: datetime | None = None  # timestamp of the last change received
    joining_at: datetime | None = None  # when the current join began
    entered_at: datetime | None = None  # when the last completed entry began
    #: Occupants by nick, from their presence (reset on every join).
    occupants: dict[str, _Occupant] = field(default_factory=dict)
    #: Stable ids handed out from this room: per room, so another room cannot hide them.
    dedupe: _Dedupe = field(default_factory=_Dedupe)
    #: Archive ids of live messages refused, so a catch-up does not accept them later.
    refused: _Dedupe = field(default_factory=lambda: _Dedupe(10_000))
    forged_logged_at: float | None = None
    forged_unlogged: int = 0


@dataclass(frozen=True, slots=True)
class _Handler:
    func: Callable[[Any], Awaitable[None] | None]
    where: ChangeFilter | None


def _room_jid(room: str) -> str:
    try:
        jid = slixmpp.JID(room)
    except InvalidJID as exc:
        raise ValueError(f"not a room JID (room@service): {room!r}: {exc}") from None
    if not jid.user or not jid.domain or jid.resource:
        raise ValueError(f"not a room JID (room@service): {room!r}")
    return str(jid.bare)


def _bare(jid: str | None) -> str | None:
    if not jid:
        return None
    try:
        return str(slixmpp.JID(jid).bare)
    except InvalidJID:
        return jid


class RCClient:
    """Reads changes from XMPP rooms; an async context manager.

    Responsible for: one `Session` (connect, reconnect, keepalive), the
    rooms on it (join, self-ping, rejoin, catch-up from the archive), which
    messages to believe (the trust rules of the module docstring), each
    change once per room in archive order, gaps, and the resume state.

    ``rooms`` are room JIDs. ``host``/``port`` default to the JID's domain and
    5222 (STARTTLS, verified against ``ca_file`` or the system's CAs);
    ``servers`` are further (host, port) nodes of the same service (a
    cluster), tried in turn when a connection ends or fails.
    ``state_file`` enables resume across restarts; ``since`` (an aware
    datetime, or a timedelta before now) asks each room's archive for the
    changes since then on the first join of a room without a saved position.
    ``publisher`` is the bridge's nick in the rooms; ``publisher_jid`` (a
    bare JID, or several: a bridge pair's two accounts, either of which may
    hold the nick) is checked where the room shows real JIDs;
    ``require_moderated=False`` reads rooms that are not moderated, with a
    warning, instead of refusing them.
    """

    def __init__(
        self,
        jid: str,
        password: str,
        rooms: Iterable[str],
        *,
        host: str | None = None,
        port: int = CLIENT_PORT,
        servers: Iterable[tuple[str, int]] = (),
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
        publisher: str = PUBLISHER_NICK,
        publisher_jid: str | Iterable[str] | None = None,
        require_moderated: bool = True,
    ) -> None:
        self.jid = slixmpp.JID(jid)
        self.rooms = list(dict.fromkeys(_room_jid(room) for room in rooms))
        if not self.rooms:
            raise ValueError("RCClient needs at least one room")
        if isinstance(since, datetime) and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        if not publisher:
            raise ValueError("publisher must be the bridge's nick in the rooms")
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
        self.publisher = publisher
        #: The publisher's accounts, bare and lower-cased (empty: the JID is not checked).
        self.publisher_jids = publisher_jids(publisher_jid)
        self.require_moderated = require_moderated
        #: Counters: undecodable <rc> payloads, duplicates dropped, gaps, and
        #: messages with a change from anyone but the publisher (dropped).
        self.decode_errors = 0
        self.duplicates = 0
        self.gaps = 0
        self.forged = 0
        #: Rooms read although they are not moderated (``require_moderated=False``).
        self.unmoderated: set[str] = set()
        self._rooms = {jid: _Room(jid, self.nick) for jid in self.rooms}
        self._queue: asyncio.Queue[Delivery | Gap | _Position | _Closed] = asyncio.Queue()
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
        self._tasks = Supervisor(
            restart_delay=reconnect_delay, max_restart_delay=reconnect_max_delay
        )
        self._rooms_task: asyncio.Task[None] | None = None
        self._post_rooms: dict[str, int] = {}
        self.session = Session(
            Endpoint(
                str(self.jid),
                password,
                host=self.host,
                port=port,
                ca_file=ca_file,
                verify_tls=verify_tls,
                alternates=tuple(servers),
            ),
            # disco#info (rooms), RSM and MAM (catch-up) for the helpers of xmlrc.xmpp.
            plugins=("xep_0030", "xep_0059", "xep_0313"),
            keepalive=ping_interval,
            ping_timeout=ping_timeout,
            connect_timeout=connect_timeout,
            backoff=Backoff(reconnect_delay, reconnect_max_delay),
        )
        self.session.on_online(self._on_online)
        self.session.on_offline(self._on_offline)
        client = self.session.client
        client.register_handler(
            Callback(
                "rcclient groupchat",
                MatchXPath(f"{{{client.default_ns}}}message"),
                self._on_message,
            )
        )
        client.register_handler(
            Callback(
                "rcclient presence",
                MatchXPath(f"{{{client.default_ns}}}presence"),
                self._on_presence,
            )
        )

    @property
    def xmpp(self) -> Any:
        """The slixmpp client of the session (for extra queries; do not connect it)."""
        return self.session.client

    @property
    def connections(self) -> int:
        """Sessions established so far (the first one included)."""
        return self.session.connections

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
        create it on many servers), refuses us or is not moderated (with
        ``require_moderated``), and an unreadable state file. After it
        returns, the client reconnects by itself.
        """
        if self._ready is not None:
            raise RuntimeError("connect() was already called")
        self._ready = asyncio.get_running_loop().create_future()
        self._load_state()
        if isinstance(self.since, timedelta):
            self._since_time = datetime.now(UTC) - self.since
        elif self.since is not None:
            self._since_time = self.since.astimezone(UTC)
        if self._state is not None:
            self._tasks.spawn(self._write_state_loop, "rcclient state")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout  # for the session and the rooms together
        try:
            await self.session.start(wait=True)
        except SessionError as exc:
            await self.close()
            raise RCClientError(str(exc)) from None
        try:
            remaining = max(deadline - loop.time(), 1.0)
            await asyncio.wait_for(asyncio.shield(self._ready), remaining)
        except TimeoutError:
            await self.close()
            raise RCClientError(
                f"not in every room of {self.session.current_address[0]}:"
                f"{self.session.current_address[1]} within {self.connect_timeout:g} s"
            ) from None
        except RCClientError:
            await self.close()
            raise

    async def close(self) -> None:
        """Leave the rooms, disconnect, stop every task, save the state; iterators end."""
        if self._closed:
            return
        self._closing = True
        await self.session.stop(goodbye=self._leave_rooms)
        await self._tasks.close()
        self._rooms_task = None
        self._save_state()
        self._closed = True
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        self._queue.put_nowait(_CLOSED)

    def _leave_rooms(self) -> None:
        for room in self._rooms.values():
            if room.joined:
                muc.leave(self.session.client, room.jid, room.nick)

    @property
    def connected(self) -> bool:
        """True while a session is up (the rooms may be being rejoined)."""
        return self.session.online and not self._closing

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
        client = self.session.client
        if self._post_rooms.get(jid) != self.session.connections:
            try:
                joined = await muc.join(client, jid, self.nick, timeout=self.iq_timeout)
            except muc.JoinError as exc:
                raise RCClientError(f"cannot join {jid}: {exc.condition}") from None
            except TimeoutError:
                raise RCClientError(f"cannot join {jid}: no answer") from None
            if joined.created:  # a new room: accept the default configuration (unlock it)
                with contextlib.suppress(IqError, IqTimeout):
                    known = await muc.get_config(client, jid, timeout=self.iq_timeout)
                    await muc.submit_config(client, jid, {}, known=known, timeout=self.iq_timeout)
            self._post_rooms[jid] = self.session.connections
        client.send_message(mto=slixmpp.JID(jid), mbody=body, mtype="groupchat")

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
                room.dedupe.first_time(stable_id)  # per room, as they were saved

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

    # -- the connection: Session's callbacks ------------------------------------------

    def _on_online(self, resumed: bool) -> None:
        """A session is up: one task joins the rooms, catches them up and watches them."""
        if self._closing:
            return
        if resumed:  # XEP-0198 kept our memberships (not enabled today: rejoin anyway)
            log.info("stream resumed")
        self._rooms_task = self._tasks.spawn(self._connection, "rcclient rooms")

    def _on_offline(self) -> None:
        """The stream is gone: nothing of that session holds (memberships, occupants)."""
        task, self._rooms_task = self._rooms_task, None
        if task is not None:
            task.cancel()  # the Supervisor reaps it
        for room in self._rooms.values():
            room.joined = room.live = False
            room.occupants.clear()

    async def _connection(self) -> None:
        """Join every room, then catch each up from its archive, then watch them.

        The first connection reports a room that cannot be entered to
        `connect`; later ones log it and try again.
        """
        assert self._ready is not None
        first = not self._ready.done()
        try:
            self.session.client.send_presence()
            for room in self._rooms.values():
                try:
                    await self._join(room)
                except _RoomError as exc:
                    if first:
                        raise
                    log.error("%s; trying again later", exc)
            if first:
                self._ready.set_result(None)
            for room in self._rooms.values():
                if room.joined:
                    await self._resume_or_retry(room)
            await self._watch()
        except _LinkDead as exc:
            self.session.drop(str(exc))  # Session reconnects; _on_offline cancels us
        except RCClientError as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._ready.done():  # connect() says so, instead of waiting it out
                self._ready.set_exception(RCClientError(f"internal error: {exc!r}"))
            raise  # logged by the Supervisor, which runs us again

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
                if room.joined and not await self._still_joined(room):
                    log.warning("no longer in %s; rejoining", room.jid)
                    room.joined = room.live = False
                if not room.joined:
                    try:
                        await self._join(room)
                    except _RoomError as exc:
                        log.error("%s; trying again in %.0f s", exc, retry)
                        continue
                    await self._resume_or_retry(room)
            if any(not room.joined for room in self._rooms.values()):
                retry = min(retry * 2, self.reconnect_max_delay)
            else:
                retry = self.reconnect_delay

    async def _no_answer(self, what: str) -> _LinkDead | _RoomError:
        """A room did not answer: the link is dead only if the server does not answer
        either. Otherwise that room alone is unreachable (on a cluster its node may
        hang): it is tried again later, and the other rooms go on."""
        # A live server answers in milliseconds; a dead one should not cost a second
        # full timeout.
        if await self.session.server_answers(min(self.ping_timeout, 5.0)):
            return _RoomError(f"{what}, though the server answers")
        return _LinkDead(what)

    async def _still_joined(self, room: _Room) -> bool:
        """XEP-0410 by the one verdict table; raises `_LinkDead` when nothing answers."""
        result = await self_ping(
            self.session.client, f"{room.jid}/{room.nick}", timeout=self.ping_timeout
        )
        if result.verdict is Verdict.NOT_JOINED:
            return False
        if result.verdict is Verdict.UNDECIDED:
            if result.timed_out:
                what = f"no answer to a self-ping in {room.jid} within {self.ping_timeout:g} s"
                if isinstance(await self._no_answer(what), _LinkDead):
                    raise _LinkDead(what)
                log.warning("%s, though the server answers: rejoining it", what)
                return False
            log.info("self-ping in %s undecided (%s); asking later", room.jid, result.condition)
        return True

    async def _join(self, room: _Room) -> None:
        """Check that the room exists (joining would create it) and is moderated, join it.

        Live messages are held back from here until `_resume` has caught up.
        """
        room.joined = room.live = False
        room.joining_at = datetime.now(UTC)
        client = self.session.client
        try:
            info = await muc.room_info(client, room.jid, timeout=self.iq_timeout)
        except IqError as exc:
            if exc.condition == "item-not-found":
                raise _RoomError(f"no such room: {room.jid}") from None
            raise _RoomError(f"cannot join {room.jid}: {exc.condition}") from None
        except IqTimeout:
            raise await self._no_answer(f"no answer about {room.jid}") from None
        room.moderated = info.moderated
        if not info.moderated:
            if self.require_moderated:
                raise _RoomError(
                    f"{room.jid} is not moderated: any occupant may post there, so its "
                    "changes cannot be trusted (require_moderated=False, or "
                    "--allow-unmoderated, reads it anyway)"
                )
            log.warning(
                "%s is NOT moderated: any occupant may post there; only messages from "
                "the publisher %r are believed",
                room.jid,
                self.publisher,
            )
            self.unmoderated.add(room.jid)
        else:
            self.unmoderated.discard(room.jid)
        room.occupants.clear()  # the room sends everyone's presence again
        try:
            joined = await muc.join(client, room.jid, room.nick, timeout=self.iq_timeout)
        except muc.JoinError as exc:
            raise _RoomError(f"cannot join {room.jid}: {exc.condition}") from None
        except TimeoutError:
            raise await self._no_answer(f"no answer joining {room.jid}") from None
        room.nick = joined.nick or room.nick
        room.joined = True

    async def _resume_or_retry(self, room: _Room) -> None:
        """`_resume`; a room whose archive does not answer (the server does) is left to
        be joined and caught up again later."""
        try:
            await self._resume(room)
        except _RoomError as exc:
            log.error("%s; trying again later", exc)
            room.joined = room.live = False

    async def _resume(self, room: _Room) -> None:
        """Catch up from the archive, hand out the live messages held meanwhile, go live."""
        try:
            await self._catch_up(room)
        except IqTimeout:
            raise await self._no_answer(f"no answer from the archive of {room.jid}") from None
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
                page = await query_page(
                    self.session.client,
                    room.jid,
                    timeout=self.iq_timeout,
                    page_size=_PAGE_SIZE,
                    after=after,
                    start=start,
                )
            except IqError as exc:
                if exc.condition == "item-not-found" and after is not None:
                    await self._archive_lost(room, after)
                else:
                    self._gap(room, f"the room's archive cannot be read ({exc.condition})")
                return
            for message in page.messages:
                self._accept(room, self._archived(room, message), replayed=True)
            fetched += len(page.messages)
            if page.complete or not page.messages or page.messages[-1].archive_id is None:
                return
            after, start = page.messages[-1].archive_id, None
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
        pages: list[list[ArchivedMessage]] = []
        total = 0
        before = ""  # RSM <before/>: the last page
        try:
            for _page in range(self.catch_up_limit // _PAGE_SIZE + 1):
                page = await query_page(
                    self.session.client,
                    room.jid,
                    timeout=self.iq_timeout,
                    page_size=_PAGE_SIZE,
                    before=before,
                )
                if not page.messages:
                    break
                pages.insert(0, page.messages)
                total += len(page.messages)
                first_id = page.messages[0].archive_id
                if page.complete or total >= self.catch_up_limit or first_id is None:
                    break
                before = first_id
        except IqError as exc:
            reason += f", and the rest cannot be read ({exc.condition})"
        kept = [message for page_messages in pages for message in page_messages]
        self._gap(room, reason, next_id=kept[0].archive_id if kept else None)
        for message in kept:
            self._accept(room, self._archived(room, message), replayed=True)

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

    # -- trust: who may speak for a room ------------------------------------------------

    def _live_distrust(self, room: _Room, nick: str) -> str | None:
        """Why a live message from `room`/`nick` is not the publisher's, or None."""
        if nick != self.publisher:
            return f"sent by {nick or 'the room itself'!r}, not by the publisher {self.publisher!r}"
        occupant = room.occupants.get(nick)
        if occupant is None:
            return None  # no presence seen (cannot happen in a MUC): the nick rule holds
        if occupant.affiliation != "owner":
            return (
                f"sent by {nick!r} with affiliation {occupant.affiliation!r}: the "
                "publisher owns its rooms"
            )
        return jid_distrust(nick, occupant.jid, self.publisher_jids)

    def _archived(self, room: _Room, message: ArchivedMessage) -> _Received:
        """An archived message with the trust rules applied: the nick (the from is
        room/nick), and what the archive recorded of the sender (non-anonymous rooms
        only: affiliation and real JID; every such record must pass)."""
        element = message.message
        distrust: str | None = None
        if message.archive_id is not None and message.archive_id in room.refused:
            distrust = "refused when it arrived live"
        else:
            sender = element.get("from") or ""
            nick = sender.partition("/")[2] if _bare(sender) == room.jid else ""
            if nick != self.publisher:
                distrust = (
                    f"sent by {nick or 'someone else'!r}, not by the publisher {self.publisher!r}"
                )
            for item in element.findall(_MUC_USER_ITEM):
                affiliation = item.get("affiliation")
                if distrust is None and affiliation is not None and affiliation != "owner":
                    distrust = f"sent by {nick!r} with affiliation {affiliation!r}"
                if distrust is None:
                    distrust = jid_distrust(nick, item.get("jid"), self.publisher_jids)
        return _Received(message.archive_id, element, distrust)

    def _refuse(self, room: _Room, item: _Received) -> None:
        """Drop a change from someone else than the publisher: count it, log it (rate-limited)."""
        self.forged += 1
        if item.archive_id is not None:
            room.refused.first_time(item.archive_id)
        now = time.monotonic()
        if room.forged_logged_at is not None and now - room.forged_logged_at < _FORGED_LOG_INTERVAL:
            room.forged_unlogged += 1
            return
        more = (
            f" ({room.forged_unlogged} more since the last warning)" if room.forged_unlogged else ""
        )
        log.warning("dropped a change in %s: %s%s", room.jid, item.distrust, more)
        room.forged_logged_at, room.forged_unlogged = now, 0

    # -- messages and presence ----------------------------------------------------------

    def _on_message(self, msg: Any) -> None:
        if msg["type"] != "groupchat" or self._closing:
            return
        sender = msg["from"]
        room = self._rooms.get(str(sender.bare))
        if room is None:
            return
        if msg.xml.find(_DELAY) is not None:
            return  # room history sent on join: the archive is where history comes from
        archive_id = None
        for stanza_id in msg.xml.findall(_STANZA_ID):
            if stanza_id.get("by") == room.jid:
                archive_id = stanza_id.get("id")
        # Judged now, by the occupants as they are now (not when the buffer is flushed).
        item = _Received(archive_id, msg.xml, self._live_distrust(room, sender.resource))
        if room.live:
            self._accept(room, item, replayed=False)
        else:  # joining or catching up: handed out after the catch-up, in order
            room.buffer.append(item)

    def _accept(self, room: _Room, item: _Received, *, replayed: bool) -> None:
        # Usually one <rc> a message; a busy room may carry several (each its own event).
        elements = item.message.findall(RC_TAG)
        changes: list[RecentChange] = []
        if elements and item.distrust is not None:
            self._refuse(room, item)
            elements = []
        for element in elements:
            try:
                change = change_from_element(element)
                stable_id = change.stable_id
            except _DECODE_FAILURES as exc:
                self.decode_errors += 1
                log.warning("undecodable <rc> in %s: %s", room.jid, exc)
                continue
            if not room.dedupe.first_time(stable_id):
                self.duplicates += 1
                continue
            changes.append(change)
        if item.archive_id is not None:
            room.last_id = item.archive_id
        if not changes:  # not a change (chat, subject, forged, undecodable): the position moves
            if item.archive_id is not None:
                self._queue.put_nowait(_Position(room.jid, item.archive_id))
            return
        for change in changes:
            room.last_time = change.timestamp
            self._queue.put_nowait(Delivery(room.jid, change, item.archive_id, replayed))

    def _on_presence(self, presence: Any) -> None:
        """Keep each room's occupants (affiliation, real JID if shown); notice our exit."""
        sender = presence["from"]
        room = self._rooms.get(str(sender.bare))
        if room is None or self._closing or presence["type"] == "error":
            return
        nick = sender.resource
        affiliation, _role, jid, codes = muc.occupant_item(presence.xml)
        if presence["type"] == "unavailable":
            room.occupants.pop(nick, None)
            if room.joined and (nick == room.nick or 110 in codes):
                # The room says we left (a kick, the room destroyed): rejoin now. The
                # self-ping would find out too; the room's own word is quicker.
                log.warning("%s removed us; rejoining", room.jid)
                room.joined = room.live = False
                self._wake.set()
            return
        if nick:
            room.occupants[nick] = _Occupant(affiliation, _bare(jid))
