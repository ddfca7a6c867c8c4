"""One XMPP stream kept up: connect, TLS, reconnect with backoff and jitter, keepalive, state.

`Session` owns a slixmpp client (c2s with STARTTLS, verified against the
system's CAs or ``ca_file``; or an XEP-0114 component) and one supervising
task that connects, waits for the session, watches it with server pings
and, when it ends, waits (exponential backoff with jitter, so a farm of
clients does not hammer a restarted server in step) and connects again.
There is only ever one connection attempt, ours: slixmpp's own retry loop
(no jitter, up to 5 minutes) is cancelled.

Users (the bridge's room sink, PubSub publisher and watch service;
rcclient's `RCClient` and `NodeReader`) register callbacks for "online"
and "offline" and talk to the server through `client` with the helpers of
this package (`muc`, `selfping`, `archive`, `pubsub`, `outbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from .fastpath import BridgeClient, BridgeComponent

__all__ = [
    "CLIENT_PORT",
    "COMPONENT_PORT",
    "Backoff",
    "Endpoint",
    "Session",
    "SessionError",
    "SessionState",
    "split_hostport",
]

log = logging.getLogger(__name__)

SessionState = Literal["connecting", "online", "disconnected", "stopped"]

#: The default ports: a client's (c2s, STARTTLS) and a component's (XEP-0114).
#: Every program's config takes its default from here.
CLIENT_PORT = 5222
COMPONENT_PORT = 5347


def split_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5222"`` or ``"[::1]:5222"`` to (host, port); ValueError if not."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f'expected "host:port", got {text!r}')
    host = host.removeprefix("[").removesuffix("]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect.

    ``host``/``port`` default to the JID's domain and 5222 (a component:
    127.0.0.1 and 5347). In component mode ``jid`` is the component's domain
    and ``password`` its secret (plaintext: keep it on loopback).

    ``alternates`` are further servers of the same service (the nodes of a
    cluster), tried in turn after ``host``/``port``: a session that ends, or an
    attempt that fails, moves on to the next one.
    """

    jid: str
    password: str
    host: str | None = None
    port: int | None = None
    ca_file: str | None = None
    verify_tls: bool = True
    component: bool = False
    #: Component mode: the user part the component speaks as (``bridge@rc.example.org``).
    component_user: str = "bridge"
    alternates: tuple[tuple[str, int], ...] = ()

    @property
    def address(self) -> tuple[str, int]:
        """The first server to try."""
        if self.component:
            return self.host or "127.0.0.1", self.port or COMPONENT_PORT
        return self.host or slixmpp.JID(self.jid).domain, self.port or CLIENT_PORT

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every server to try, in order: `address`, then the alternates."""
        first = self.address
        return (first, *(a for a in self.alternates if a != first))


class Backoff:
    """Delays between reconnection attempts: doubling from `initial` to `maximum`, with
    jitter (each delay is drawn from half to one and a half times the step)."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._step = initial

    def next(self) -> float:
        delay = self._step * random.uniform(0.5, 1.5)
        self._step = min(self._step * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._step = self.initial


class SessionError(Exception):
    """The first connection failed: wrong password, untrusted certificate, no server."""


def make_client(
    endpoint: Endpoint, *, stream_management: bool, plugins: Iterable[str], resumable: bool = True
) -> BridgeClient | BridgeComponent:
    """The slixmpp object for `endpoint`, TLS verified unless ``verify_tls`` is false."""
    client: BridgeClient | BridgeComponent
    if endpoint.component:
        host, port = endpoint.address  # connect() is given the address of each attempt
        client = BridgeComponent(endpoint.jid, endpoint.password, host, port)
    else:
        client = BridgeClient(endpoint.jid, endpoint.password)
        client.enable_direct_tls = False  # STARTTLS on the c2s port
        client.enable_starttls = True
        if endpoint.ca_file:
            client.ca_certs = Path(endpoint.ca_file)
        if not endpoint.verify_tls:
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = ssl.CERT_NONE
        if stream_management:
            # Resumption keeps room membership across a short network blip; without
            # it the server ends our session (and room presence) when the link drops.
            client.register_plugin("xep_0198", {"window": 100, "allow_resume": resumable})
    for name in ("xep_0004", "xep_0199", *plugins):
        if name == "xep_0199":
            client.register_plugin(name, {"keepalive": False})  # our keepalive, below
        else:
            client.register_plugin(name)
    return client


Callback = Callable[[], None]


class Session:
    """One XMPP stream, kept up until `stop`; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        plugins: Iterable[str] = (),
        stream_management: bool = False,
        resumable: bool = True,
        keepalive: float = 60.0,
        ping_timeout: float = 20.0,
        connect_timeout: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.keepalive = keepalive
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.client = make_client(
            endpoint, stream_management=stream_management, plugins=plugins, resumable=resumable
        )
        self.state: SessionState = "disconnected"
        #: Sessions established (a resumed stream counts too), and the last end's reason.
        self.connections = 0
        self.last_error: str | None = None
        #: The servers are tried in turn (`_index` counts attempts); the backoff
        #: pause comes only once each has failed (`_failures`: since the last session).
        self._index = 0
        self._failures = 0
        self._state_callbacks: list[Callable[[SessionState], None]] = []
        self._online_callbacks: list[Callable[[bool], None]] = []
        self._offline_callbacks: list[Callback] = []
        self._online = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._started: asyncio.Future[bool] | None = None
        self._ended: asyncio.Future[str] | None = None
        for event, handler in (
            ("session_start", self._on_session_start),
            ("session_resumed", self._on_session_resumed),
            ("failed_auth", self._on_failed_auth),
            ("connection_failed", self._on_connection_failed),
            ("ssl_invalid_chain", self._on_invalid_certificate),
            ("disconnected", self._on_disconnected),
        ):
            self.client.add_event_handler(event, handler)

    # -- for users ---------------------------------------------------------------------

    def on_state(self, callback: Callable[[SessionState], None]) -> None:
        self._state_callbacks.append(callback)

    def on_online(self, callback: Callable[[bool], None]) -> None:
        """`callback(resumed)` when a session starts; ``resumed`` for an XEP-0198 resumption
        (room memberships survived), False for a fresh session (rejoin everything)."""
        self._online_callbacks.append(callback)

    def on_offline(self, callback: Callback) -> None:
        """`callback()` when the stream is gone: nothing in flight can be trusted to arrive."""
        self._offline_callbacks.append(callback)

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def sender(self) -> str | None:
        """The JID to put in ``from`` (a component must name one); None for a client,
        whose server stamps its own."""
        if self.endpoint.component:
            return f"{self.endpoint.component_user}@{self.endpoint.jid}"
        return None

    @property
    def current_address(self) -> tuple[str, int]:
        """The server this session is connected to, or tries next."""
        addresses = self.endpoint.addresses
        return addresses[self._index % len(addresses)]

    @property
    def own_jid(self) -> str:
        """Our full JID on this stream (a component: its domain)."""
        return str(self.client.boundjid)

    async def wait_online(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._online.wait(), timeout)

    async def start(self, *, wait: bool = False) -> None:
        """Start connecting (and reconnecting) in the background.

        With ``wait``, return once the first session is up, or raise
        `SessionError` (after stopping) if the first attempt fails: a program
        started with a wrong password should say so, not retry forever.
        """
        if self._supervisor is not None:
            raise RuntimeError("start() was already called")
        loop = asyncio.get_running_loop()
        self._first = loop.create_future() if wait else None
        self._supervisor = loop.create_task(self._supervise(), name="xmpp session")
        if self._first is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._first), self.connect_timeout)
        except TimeoutError:
            await self.stop()
            where = ", ".join(f"{host}:{port}" for host, port in self.endpoint.addresses)
            raise SessionError(
                f"no answer from {where} within {self.connect_timeout:g} s"
            ) from None
        except SessionError:
            await self.stop()
            raise

    def drop(self, reason: str) -> None:
        """End the current connection (a ping went unanswered); the supervisor reconnects."""
        if self._ended is not None and not self._ended.done():
            log.warning("%s: dropping the connection", reason)
            self._ended.set_result(reason)

    async def stop(self, goodbye: Callback | None = None) -> None:
        """Stop reconnecting and close the stream; `goodbye()` runs first while online
        (say "unavailable" to rooms). Never raises."""
        if self._stopping:
            return
        self._stopping = True
        try:
            if goodbye is not None and self._online.is_set():
                goodbye()
            if self._online.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.disconnect(wait=1.0), 3)
        except Exception:
            log.exception("error while closing the XMPP stream")
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await self._drop_connection()
        # slixmpp's outgoing-filter task outlives the stream; end it with us.
        filters_task = getattr(self.client, "_run_out_filters", None)
        if isinstance(filters_task, asyncio.Future) and not filters_task.done():
            filters_task.cancel()
            await asyncio.gather(filters_task, return_exceptions=True)
        self._set_state("stopped")

    # -- the supervisor ----------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                reason, had_session = await self._connection()
            except Exception as exc:  # a bug must not end the reconnecting for good
                log.exception("XMPP connection failed unexpectedly")
                reason, had_session = f"internal error: {exc}", False
            self.last_error = reason
            if self._stopping:
                return
            servers = len(self.endpoint.addresses)
            self._index += 1  # the next attempt goes to the next server, if any
            self._failures = 0 if had_session else self._failures + 1
            if had_session:
                self.backoff.reset()
            if self._first is not None and not self._first.done():
                if self._failures < servers:  # a first start tries each server once
                    log.warning("%s; trying %s:%s", reason, *self.current_address)
                    continue
                self._first.set_exception(SessionError(reason))
                return
            if servers > 1 and (had_session or self._failures % servers):
                # Another node of the cluster, at once: the one that dropped us or
                # refused us is the one in doubt. A whole round of failures pauses.
                log.warning("%s; trying %s:%s", reason, *self.current_address)
                continue
            pause = self.backoff.next()
            log.warning("%s; reconnecting in %.1f s", reason, pause)
            await asyncio.sleep(pause)

    async def _connection(self) -> tuple[str, bool]:
        """One connection, from connect() to its end; returns why it ended."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[bool] = loop.create_future()
        ended: asyncio.Future[str] = loop.create_future()
        self._started, self._ended = started, ended
        self._set_state("connecting")
        host, port = self.current_address
        self.client.connect(host, port)
        keepalive: asyncio.Task[None] | None = None
        try:
            either: set[asyncio.Future[Any]] = {started, ended}
            await asyncio.wait(
                either, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if ended.done():
                return ended.result(), False
            if not started.done():
                return f"no session with {host}:{port} within {self.connect_timeout:g} s", False
            resumed = started.result()
            self.connections += 1
            self._online.set()
            self._set_state("online")
            log.info("%s as %s", "resumed the stream" if resumed else "connected", self.own_jid)
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            self._call_all(self._online_callbacks, resumed)
            keepalive = loop.create_task(self._keepalive(ended), name="xmpp keepalive")
            return await ended, True
        finally:
            if keepalive is not None:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
            was_online = self._online.is_set()
            self._online.clear()
            if not self._stopping:
                self._set_state("disconnected")
            if was_online:
                self._call_all(self._offline_callbacks)
            await self._drop_connection()

    async def server_answers(self, timeout: float | None = None) -> bool:
        """Whether our server answers a ping within `timeout` (default `ping_timeout`).

        For a room that did not answer: if the server does, the link is fine and
        only that room is unreachable (on a cluster, its node may hang)."""
        iq = self.client.make_iq_get(queryxmlns=None, ito=slixmpp.JID(self.client.boundjid.domain))
        iq.enable("ping")
        try:
            await iq.send(timeout=self.ping_timeout if timeout is None else timeout)
        except IqTimeout:
            return False
        except IqError:
            pass  # an answer, even an error, proves the link is alive
        return True

    async def _keepalive(self, ended: asyncio.Future[str]) -> None:
        """Ping the server now and then, so a silently dead link is noticed."""
        while not ended.done():
            await asyncio.sleep(self.keepalive)
            if not await self.server_answers():
                self.drop(f"the server did not answer a ping within {self.ping_timeout:g} s")

    async def _drop_connection(self) -> None:
        """Abort the socket (if any) and wait until slixmpp has seen it go."""
        self.client.cancel_connection_attempt()
        if self.client.transport is not None:
            self.client.abort()
        for _ in range(500):  # connection_lost runs on a later loop iteration
            if self.client.transport is None:
                break
            await asyncio.sleep(0.01)

    # -- slixmpp's events --------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(reason)

    def _on_session_start(self, _event: Any) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(False)

    def _on_session_resumed(self, _event: Any) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(True)

    def _on_failed_auth(self, _event: Any) -> None:
        self._end(f"the server refused the password for {slixmpp.JID(self.endpoint.jid).bare}")

    def _on_connection_failed(self, error: Any) -> None:
        self.client.cancel_connection_attempt()  # we retry on our own schedule
        host, port = self.current_address
        self._end(f"cannot connect to {host}:{port}: {error}")

    def _on_invalid_certificate(self, error: Any) -> None:
        host, port = self.current_address
        self._end(f"the certificate of {host}:{port} is not trusted: {error}")

    def _on_disconnected(self, reason: Any) -> None:
        host, port = self.current_address
        self._end(f"disconnected from {host}:{port}" + (f" ({reason})" if reason else ""))

    def _set_state(self, state: SessionState) -> None:
        if state != self.state:
            self.state = state
            self._call_all(self._state_callbacks, state)

    @staticmethod
    def _call_all(callbacks: list[Any], *args: Any) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:  # one user's bug must not break the stream for the others
                log.exception("session callback %r failed", callback)
