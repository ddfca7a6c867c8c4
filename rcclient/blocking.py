"""`iter_changes`: the client for plain scripts and notebooks, no asyncio needed.

    import rcclient

    with rcclient.iter_changes("me@example.org", "secret", ["enwiki@conference.example.org"],
                               type="edit", ns=0) as changes:
        for change in changes:
            print(change.title)

The asyncio client runs in one background thread (the only thread rcclient
starts: the caller is synchronous) with its own event loop; changes cross
over through a thread-safe queue. `ChangeStream.close()` (or leaving the
``with`` block, or dropping the iterator) stops the client and the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from xmlrc.wire import RecentChange

from .client import Delivery, Gap, RCClient, RCClientError
from .filters import Predicate, build, split_filter_options
from .trust import publisher_jids

__all__ = ["ChangeStream", "iter_changes"]

log = logging.getLogger(__name__)


class _End:
    """Queue marker: the client stopped."""


class ChangeStream(Iterator[RecentChange]):
    """A blocking iterator of changes, fed by an `RCClient` in a background thread."""

    def __init__(
        self,
        make_client: Callable[[], RCClient],
        where: Callable[[RecentChange], bool] | None = None,
        *,
        on_gap: Callable[[Gap], None] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._make_client = make_client
        self._where = where
        self._on_gap = on_gap
        self._items: queue.Queue[Delivery | Gap | _End | BaseException] = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._finished = False
        self._thread = threading.Thread(target=self._main, name="rcclient", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            self.close()
            raise RCClientError(f"the client did not start within {start_timeout:g} s")
        if self._error is not None:
            self._thread.join(10)
            raise self._error

    # -- the caller's side ------------------------------------------------------------

    def __iter__(self) -> ChangeStream:
        return self

    def __next__(self) -> RecentChange:
        while not self._finished:
            try:
                item = self._items.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._items.empty():
                    self._finished = True
                continue
            if isinstance(item, _End):
                self._finished = True
                break
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            if isinstance(item, Gap):
                if self._on_gap is not None:
                    self._on_gap(item)
                else:
                    log.warning("gap in %s: %s", item.room, item.reason)
                continue
            if self._where is None or self._where(item.change):
                return item.change
        raise StopIteration

    @property
    def running(self) -> bool:
        """True while the background client runs (until `close`, or the client stops)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the client and its thread (waits for them, at most about 15 s)."""
        self._finished = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        if threading.current_thread() is not self._thread:
            self._thread.join(15)

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped without close(): ask the thread to stop, without waiting for it.
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    # -- the background thread --------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the caller, never lost in the thread
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                self._items.put(exc)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = self._make_client()
        try:
            await client.connect()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        pump = asyncio.create_task(self._pump(client))
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, stop):
                task.cancel()
            await asyncio.gather(pump, stop, return_exceptions=True)
            await client.close()
            self._items.put(_End())

    async def _pump(self, client: RCClient) -> None:
        async for event in client.events():
            self._items.put(event)


def iter_changes(
    jid: str,
    password: str,
    rooms: Iterable[str],
    *predicates: Predicate,
    on_gap: Callable[[Gap], None] | None = None,
    **options: Any,
) -> ChangeStream:
    """Connect and return a blocking iterator over the changes of `rooms`.

    Keyword arguments that name a filter (``wiki``, ``type``, ``ns``,
    ``bot``, ``user``, ``title``, ``min_change``..., see `rcclient.filters`)
    and positional callables filter the changes; the other keyword
    arguments go to `RCClient` (``host``, ``port``, ``ca_file``,
    ``state_file``, ``since``, ``publisher``, ``publisher_jid``: one JID or
    several, a bridge pair's two accounts; ``require_moderated``...). Raises
    `RCClientError` at once when the client cannot connect or join (a room
    that is not moderated included, unless ``require_moderated=False``); a
    bad ``publisher_jid`` raises `ValueError` or `TypeError` here. A `Gap`
    goes to ``on_gap`` (called in the iterating thread), or is logged as a
    warning.
    """
    conditions, client_options = split_filter_options(options)
    if "publisher_jid" in client_options:  # read now (an iterator once), checked here
        client_options["publisher_jid"] = publisher_jids(client_options["publisher_jid"])
    room_list = list(rooms)
    where = build(predicates, conditions)
    connect_timeout = float(client_options.get("connect_timeout", 30.0))

    def make_client() -> RCClient:
        return RCClient(jid, password, room_list, **client_options)

    return ChangeStream(make_client, where, on_gap=on_gap, start_timeout=connect_timeout + 30)
