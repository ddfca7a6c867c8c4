"""Polling: each wiki's ``list=recentchanges``, oldest first, to the sinks, none lost or repeated.

Per wiki, a `WikiPoller` logs in (if configured), reads ``meta=siteinfo``
(the wiki ID and URLs the changes carry) and then, every ``interval``
seconds, asks for the changes from its resume point on (``rcdir=newer``),
page after page (API continuation) until the answer is complete.  After each
page it sends the changes not sent before to the sink and saves the new
resume point in the state file: a restart continues where the last page
ended, however long it was away (as far back as the wiki keeps recent
changes, ``$wgRCMaxAge``: 90 days by default).

The query logic is pure (`xmlrc.wire.apijson`); this module only
waits, asks and sends, within `Limits` against a broken or hostile API:
``page_delay`` seconds between two pages, at most ``max_pages`` pages a
round, a round ends when the API repeats a continuation it gave in that
round, an rcid is sent at most once a round however often the API repeats
it, and siteinfo is checked (`rc2udp.siteinfo`) before it goes into datagrams.
A stop request (SIGTERM, Ctrl-C) is honoured between pages: a page is
always sent and saved whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, Protocol, TypeVar

from xmlrc.wire import DecodeError, change_to_json, coerce
from xmlrc.wire.apijson import (
    ResumePoint,
    Site,
    can_read_patrolled,
    change_from_api,
    rcprop,
    recentchanges_query,
    site_from_siteinfo,
    unsent,
)
from xmlrc.wire.model import iso_from_utc
from xmlrc_emitter import AsyncEmitter, DatagramFormat, RecentChange

from .api import ApiClient, ApiError
from .config import Target
from .limits import Limits
from .siteinfo import SiteinfoError, check_general
from .state import StateFile

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Waits `seconds` or until the event is set (`sleep_or_stop`; tests record instead).
Pause = Callable[[float, asyncio.Event], Awaitable[None]]
#: Parameters a continuation may not set: they are the client's, not the module's.
_CLIENT_PARAMS = frozenset({"format", "formatversion", "maxlag", "assert", "action"})


class ChangeSink(Protocol):
    """Where polled changes go."""

    async def send(self, change: RecentChange) -> None: ...


class UdpSink:
    """Every change to every target, as one datagram each."""

    def __init__(
        self,
        targets: tuple[Target, ...],
        fmt: DatagramFormat,
        prefix: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.targets = targets
        self._emitters = [
            AsyncEmitter(t.host, t.port, fmt=fmt, prefix=prefix, secret=secret) for t in targets
        ]
        self.sent = 0
        self.failed = 0

    async def send(self, change: RecentChange) -> None:
        for target, emitter in zip(self.targets, self._emitters, strict=True):
            try:
                await emitter.send(change)
            except ValueError as exc:  # larger than a datagram can be
                self.failed += 1
                log.warning("not sent to %s: %s: %s", target, change.stable_id, exc)
            except OSError as exc:  # e.g. nothing listens there right now
                self.failed += 1
                log.warning("sending to %s failed: %s", target, exc)
            else:
                self.sent += 1

    def close(self) -> None:
        for emitter in self._emitters:
            emitter.close()


class JsonLinesSink:
    """Every change as one JSON line (EventStreams shape), for ``rc2udp replay``."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.sent = 0

    async def send(self, change: RecentChange) -> None:
        self._handle.write(json.dumps(change_to_json(change), ensure_ascii=False) + "\n")
        self._handle.flush()
        self.sent += 1


async def until_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Await `awaitable` unless `stop` is set first: ``(True, result)`` or ``(False, None)``.

    Both waits run as tasks owned here; the loser is cancelled and awaited.
    """
    work: asyncio.Task[T] = asyncio.ensure_future(awaitable)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stopper):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, stopper, return_exceptions=True)
    if work.cancelled():
        return False, None
    return True, work.result()


async def sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    """Wait `seconds`, or less if `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class PollStats:
    """The poller's counters: polls, pages, changes sent, bad changes, errors, duplicates."""

    polls: int = 0
    pages: int = 0
    sent: int = 0
    undecodable: int = 0
    errors: int = 0
    #: Changes the API gave again within one round (not sent again).
    duplicates: int = 0
    #: Rounds ended early: a repeated continuation, or ``max_pages``.
    cut_short: int = 0


class RoundMemory:
    """The rcids seen in one round, so that a change the API repeats is sent once.

    Bounded (``Limits.round_memory``): past it the oldest rcids are forgotten.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[int] = deque()
        self._known: set[int] = set()

    def first_time(self, rcid: int) -> bool:
        """Whether `rcid` is new in this round (and remember it)."""
        if rcid in self._known:
            return False
        self._known.add(rcid)
        self._order.append(rcid)
        if len(self._order) > self.size:
            self._known.discard(self._order.popleft())
        return True


def _fingerprint(continuation: Mapping[str, str]) -> bytes:
    """A short digest of a continuation: rounds remember these, not the (any size) values."""
    return hashlib.sha256(json.dumps(sorted(continuation.items())).encode()).digest()


class WikiPoller:
    """Polls one wiki into a sink; keeps its resume point in the state file."""

    def __init__(
        self,
        client: ApiClient,
        sink: ChangeSink,
        state: StateFile,
        *,
        since: datetime,
        login: tuple[str, str] | None = None,
        interval: float = 10.0,
        lookback: timedelta = timedelta(seconds=10),
        limit: int | str = "max",
        until: datetime | None = None,
        rng: random.Random | None = None,
        limits: Limits | None = None,
        pause: Pause = sleep_or_stop,
    ) -> None:
        self.client = client
        self.api = client.api_url
        self.sink = sink
        self.state = state
        self.since = since
        self.login = login
        self.interval = interval
        self.lookback = lookback
        self.limit = limit
        self.until = until
        #: The client's limits unless told otherwise: one set per wiki.
        self.limits = limits or client.limits
        self._pause = pause
        self.stats = PollStats()
        self.site: Site | None = None
        self.prop = rcprop(patrolled=False)
        self._rng = rng or random.Random()
        self._reported: set[int] = set()
        self._resume: ResumePoint | None = None

    async def prepare(self) -> Site:
        """Log in if configured; read the wiki's ID, URLs and the user's rights."""
        if self.login is not None:
            await self.client.login(*self.login)
        params = {"action": "query", "meta": "siteinfo|userinfo", "siprop": "general"}
        data = await self.client.get({**params, "uiprop": "rights"})
        query = data.get("query")
        if not isinstance(query, dict):
            query = {}
        try:
            check_general(query.get("general"))
            site = site_from_siteinfo(query.get("general"), self.api)
        except (SiteinfoError, DecodeError) as exc:
            raise ApiError("badsiteinfo", f"{self.api}: {exc}") from None
        patrolled = can_read_patrolled(query.get("userinfo"))
        self.prop = rcprop(patrolled=patrolled)
        if not patrolled:
            log.info("%s: no patrol rights, so no patrolled flags (log in to get them)", self.api)
        log.info("%s (%s): from %s", self.api, site.wiki, iso_from_utc(self.resume.timestamp))
        self.site = site
        return site

    @property
    def resume(self) -> ResumePoint:
        """Where the next poll starts: the state file's point, else `since`."""
        if self._resume is None:
            self._resume = self.state.get(self.api) or ResumePoint.start(self.since)
        return self._resume

    async def poll_once(self, stop: asyncio.Event) -> int:
        """Fetch and send everything new, page by page; the number of changes sent."""
        if self.site is None:
            completed, _ = await until_stopped(self.prepare(), stop)
            if not completed:
                return 0
        site = self.site
        assert site is not None
        self.stats.polls += 1
        asked = self.resume  # every page of this round answers the query made from it
        base = recentchanges_query(asked, prop=self.prop, limit=self.limit)
        if self.until is not None:
            base["rcend"] = iso_from_utc(self.until)
        continuation: dict[str, str] = {}
        given = {_fingerprint(continuation)}  # the continuations of this round, digested
        memory = RoundMemory(self.limits.round_memory)
        settled: datetime | None = None
        sent = pages = 0
        while not stop.is_set():
            if pages and self.limits.page_delay > 0:
                await self._pause(self.limits.page_delay, stop)  # polite, and a stop cuts it
                if stop.is_set():
                    break
            completed, data = await until_stopped(self.client.get({**base, **continuation}), stop)
            if not completed or data is None:
                break
            pages += 1
            if settled is None:  # the server's time when this poll began
                with contextlib.suppress(DecodeError):
                    settled = coerce.iso_time(data.get("curtimestamp"), "curtimestamp")
            sent += await self._send_page(site, data, settled, memory, asked)
            following = data.get("continue")
            if not isinstance(following, dict):
                break
            continuation = {str(k): str(v) for k, v in following.items()}
            if taken := sorted((set(base) | _CLIENT_PARAMS) & set(continuation)):
                raise ApiError(
                    "badanswer", f"{self.api}: the continuation would change {taken[0]!r}"
                )
            fingerprint = _fingerprint(continuation)
            if fingerprint in given:
                self.stats.cut_short += 1
                log.warning(
                    "%s: the API repeated its continuation within one round (a broken "
                    "or hostile wiki); this round ends after %d pages",
                    self.api,
                    pages,
                )
                break
            given.add(fingerprint)
            if pages >= self.limits.max_pages:
                self.stats.cut_short += 1
                log.warning(
                    "%s: %d pages in one round (max_pages); the next round continues from here",
                    self.api,
                    pages,
                )
                break
        return sent

    async def _send_page(
        self,
        site: Site,
        data: dict[str, Any],
        settled: datetime | None,
        memory: RoundMemory,
        asked: ResumePoint,
    ) -> int:
        query = data.get("query")
        items = query.get("recentchanges") if isinstance(query, dict) else None
        if not isinstance(items, list):
            raise ApiError("badanswer", f"{self.api}: no recentchanges list in the answer")
        page: list[RecentChange] = []
        for item in items:
            try:
                page.append(change_from_api(item, site))
            except DecodeError as exc:
                rcid = item.get("rcid") if isinstance(item, dict) else None
                if rcid not in self._reported:
                    self.stats.undecodable += 1
                    log.warning("%s: skipped change %s: %s", self.api, rcid, exc)
                    if isinstance(rcid, int):
                        self._reported.add(rcid)
        fresh, after = unsent(
            self.resume, page, lookback=self.lookback, settled=settled, query=asked
        )
        # Every rcid of the page is noted (also those `unsent` skipped), so a change
        # the API gives again later in this round, even with another time, is not new.
        chosen = {id(change) for change in fresh}
        once: list[RecentChange] = []
        for change in page:
            new = change.rcid is None or memory.first_time(change.rcid)
            if id(change) in chosen:
                if new:
                    once.append(change)
                else:
                    self.stats.duplicates += 1
        if len(once) < len(fresh):
            log.warning(
                "%s: the API repeated %d changes in this round; each is sent once",
                self.api,
                len(fresh) - len(once),
            )
        for change in once:
            await self.sink.send(change)
        self.state.put(self.api, site.wiki, after)
        self._resume = after
        self.stats.pages += 1
        self.stats.sent += len(once)
        if len(self._reported) > 100_000:
            self._reported.clear()
        return len(once)

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Poll until `stop` is set (or one complete pass with `once`).

        Failures that outlast the client's retries are logged and retried
        with growing waits (with `once` they are raised).
        """
        failures = 0
        while not stop.is_set():
            try:
                await self.poll_once(stop)
            except ApiError as exc:
                if once:
                    raise
                failures += 1
                self.stats.errors += 1
                delay = self.client.retry.backoff(failures, self._rng)
                log.error("%s: %s; next poll in %.0f s", self.api, exc, delay)
            else:
                failures = 0
                delay = self.interval
                if once:
                    return
            await sleep_or_stop(delay, stop)
