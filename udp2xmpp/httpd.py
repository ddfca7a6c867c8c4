"""The operations listener: ``/metrics`` (Prometheus) and ``/healthz``, over aiohttp.

It runs in the bridge's own event loop (no thread) and only reads: a scrape
turns the bridge's counters into metric families (`udp2xmpp.metrics`).
``/healthz`` answers 200 with a small JSON body while the bridge is connected
to its XMPP server and receiving datagrams, 503 (same body) otherwise.

It cannot take the bridge down (``[http]`` limits):

- a client has ``request_timeout`` seconds from connecting (or from the end of
  its last response) to send a complete request, else it is closed: aiohttp's
  keep-alive timer, armed at connection time, is that deadline;
- at most ``max_connections`` are open at once: past it, the oldest is closed
  at once to make room (so slow clients cannot lock a scraper out), counted in
  ``udp2xmpp_http_connections_shed_total{reason="over_cap"}``;
- none stays open longer than ``max_connection_seconds`` (a client that does
  not read its response), ``reason="too_long"``;
- when the process is out of file descriptors, asyncio's "accept() out of
  system resource" error is logged a few times a minute, not once per retry.

With ``http.page`` (the default) it also serves the live-feed web page: ``/``
redirects to ``/web/``, whose files (`udp2xmpp/web`, read once at start, a fixed
list: no path from a request ever reaches the file system) come with a strict
Content-Security-Policy; ``/web/config.json`` gives the page its defaults.

This module does not import the bridge (which imports it): it reads a
`Monitored`, the few attributes of a bridge it needs, checked by type.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from xmlrc.xmpp import Session

from .config import BridgeConfig, HttpSettings
from .sink.rooms import RoomSink
from .source.edge import EdgeGuard
from .source.feed import Feed
from .source.udp import UdpSource
from .throttled_log import RateLimitedLog

log = logging.getLogger(__name__)

#: The page's files, and the content type each is served with.
WEB_DIR = Path(__file__).resolve().parent / "web"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}


def web_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by path under /web/ (``index.html``, ``vendor/...``): body, type."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(WEB_DIR.rglob("*")):
        content_type = _CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            files[path.relative_to(WEB_DIR).as_posix()] = (path.read_bytes(), content_type)
    return files


def page_headers(websocket: str | None) -> dict[str, str]:
    """Security headers of every page response: nothing inline, nothing external but
    the XMPP WebSocket (the configured one, else any: the query string may name it)."""
    connect = f"'self' {websocket}" if websocket else "'self' ws: wss:"
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


#: The message asyncio's accept loop reports when the process has no descriptor left.
_ACCEPT_ERROR = "socket.accept() out of system resource"


class Monitored(Protocol):
    """What the ops listener reads of a bridge: its parts' state, never changed."""

    @property
    def config(self) -> BridgeConfig: ...
    @property
    def sink(self) -> RoomSink: ...
    @property
    def session(self) -> Session: ...
    @property
    def sources(self) -> Sequence[UdpSource]: ...
    @property
    def edge(self) -> EdgeGuard: ...
    @property
    def feeds(self) -> Sequence[Feed]: ...


def health(bridge: Monitored) -> tuple[bool, dict[str, Any]]:
    """Whether the bridge is doing its job, and the details /healthz shows.

    ``degraded`` (503 too): connected, but some room is refused (not the bridge's,
    not configured as required, or its nick taken), so changes for it are dropped.
    """
    sink = bridge.sink
    listening = [source for source in bridge.sources if source.listening]
    feeds = {feed.name: feed.health() for feed in bridge.feeds}
    up = (
        sink.online
        and len(listening) == len(bridge.sources)
        and all(ok for ok, _details in feeds.values())
        and bool(bridge.sources or bridge.feeds)
    )
    refused = sink.refused_rooms()
    status = "unavailable" if not up else ("degraded" if refused else "ok")
    return status == "ok", {
        "status": status,
        "xmpp": bridge.session.state,
        "xmpp_server": _hostport(*bridge.session.current_address),
        "udp": [_hostport(source.host, source.port) for source in listening],
        "rooms": len(sink.joined_rooms()),
        "standby_rooms": sink.standby_rooms(),
        "refused_rooms": refused,
        "pending": sink.pending,
        **({"feeds": {name: details for name, (_ok, details) in feeds.items()}} if feeds else {}),
    }


class ConnectionGuard:
    """A protocol factory that caps, ages and counts the listener's connections.

    It wraps aiohttp's own factory: each accepted connection is registered
    (oldest first) before aiohttp sees it; past `max_connections` the oldest
    is aborted, so the count of open connections never exceeds the cap and a
    new client always gets in. Each connection is aborted after `max_lifetime`
    seconds whatever it is doing.
    """

    __slots__ = (
        "_factory",
        "_open",
        "accepted",
        "max_connections",
        "max_lifetime",
        "peak",
        "shed_over_cap",
        "shed_too_long",
    )

    def __init__(
        self, factory: Callable[[], asyncio.Protocol], *, max_connections: int, max_lifetime: float
    ) -> None:
        if max_connections < 1 or max_lifetime <= 0:
            raise ValueError("need max_connections >= 1 and max_lifetime > 0")
        self._factory = factory
        self.max_connections = max_connections
        self.max_lifetime = max_lifetime
        #: Open connections, oldest first (dicts keep insertion order).
        self._open: dict[_GuardedProtocol, None] = {}
        self.accepted = 0
        self.peak = 0
        self.shed_over_cap = 0
        self.shed_too_long = 0

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self)

    @property
    def open(self) -> int:
        """Connections open now (counted from accept to close)."""
        return len(self._open)

    def close_all(self) -> None:
        """Abort every connection still open (the listener is stopping)."""
        for protocol in list(self._open):
            protocol.abort()

    def _admit(self, protocol: _GuardedProtocol) -> asyncio.Protocol:
        while len(self._open) >= self.max_connections:
            self.shed_over_cap += 1
            next(iter(self._open)).abort()  # unregisters it: the count drops now
        self._open[protocol] = None
        self.accepted += 1
        self.peak = max(self.peak, len(self._open))
        return self._factory()

    def _release(self, protocol: _GuardedProtocol) -> None:
        self._open.pop(protocol, None)


class _GuardedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's protocol; registered with its guard while open."""

    __slots__ = ("_deadline", "_guard", "_inner", "_transport")

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner = self._guard._admit(self)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.max_lifetime, self._too_long)
        self._inner.connection_made(transport)

    def _too_long(self) -> None:
        self._deadline = None
        self._guard.shed_too_long += 1
        self.abort()

    def abort(self) -> None:
        """Close at once (no flushing: a client that does not read gets nothing more)."""
        self._guard._release(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard._release(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._transport = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a `ConnectionGuard` (aiohttp's TCPSite
    takes no protocol factory of ours)."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard_args: Any) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        server = runner.server
        assert server is not None
        self._guard = ConnectionGuard(server, **guard_args)

    @property
    def name(self) -> str:
        return f"http://{_hostport(self._host, self._port)}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._backlog
        )


class OpsServer:
    """Serves /metrics and /healthz for one bridge on one TCP address, within limits."""

    def __init__(
        self,
        bridge: Monitored,
        registry: CollectorRegistry,
        host: str,
        port: int,
        settings: HttpSettings | None = None,
    ) -> None:
        self.bridge = bridge
        self.registry = registry
        self.host = host
        self.port = port
        # The limits come from [http] (the bridge passes only the address).
        self.settings = settings if settings is not None else bridge.config.http
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._web: dict[str, tuple[bytes, str]] = {}
        if self.settings.page:
            self._web = web_files()
            self._web["config.json"] = (self._page_config(), _CONTENT_TYPES[".json"])
            self._page_headers = page_headers(self.settings.page_websocket)
            app.router.add_get("/", self._page_root)
            app.router.add_get("/web", self._page_root)
            app.router.add_get("/web/{path:.*}", self._page_file)
        timeout = self.settings.request_timeout
        # No access log: a scrape every few seconds is not news. The keep-alive
        # timer starts when a connection is made, so it is also the deadline for
        # the first request's headers; lingering (reading an unwanted body) no longer.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=timeout,
            lingering_time=timeout,
            handler_cancellation=True,
        )
        self._site: _GuardedSite | None = None
        self._started = False
        self._accept_log = RateLimitedLog(log, burst=3, period=60.0)
        self.accept_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None
        registry.register(_OpsCollector(self))

    @property
    def guard(self) -> ConnectionGuard | None:
        """The connection guard, once listening."""
        return self._site._guard if self._site is not None else None

    async def start(self) -> tuple[str, int]:
        """Listen; returns the address really bound (port 0 picks a free one)."""
        await self._runner.setup()
        self._started = True
        guard_args = {
            "max_connections": self.settings.max_connections,
            "max_lifetime": self.settings.max_connection_seconds,
        }
        self._site = _GuardedSite(self._runner, self.host, self.port, guard_args)
        await self._site.start()
        bound = self._runner.addresses[0]
        self.host, self.port = bound[0], bound[1]
        self._site._host, self._site._port = self.host, self.port
        loop = self._loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        log.info("metrics and health on http://%s/", _hostport(self.host, self.port))
        return self.host, self.port

    async def stop(self) -> None:
        if self._started:
            self._started = False
            loop = self._loop
            if loop is not None and loop.get_exception_handler() == self._loop_error:
                loop.set_exception_handler(self._previous_handler)
            await self._runner.cleanup()
            if self._site is not None:
                self._site._guard.close_all()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Accept errors of our socket, rate-limited; anything else to the previous handler."""
        sock = context.get("socket")
        if context.get("message") == _ACCEPT_ERROR and self._owns(sock):
            self.accept_errors += 1
            self._accept_log.warning(
                "cannot accept HTTP connections on %s: %s (retrying)",
                _hostport(self.host, self.port),
                context.get("exception"),
            )
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _owns(self, sock: Any) -> bool:
        server = self._site._server if self._site is not None else None
        if sock is None or server is None:
            return False
        try:
            sockets = getattr(server, "sockets", ())  # an asyncio.Server's
            return any(sock.fileno() == ours.fileno() for ours in sockets)
        except (OSError, ValueError):
            return False

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    def _page_config(self) -> bytes:
        settings = self.settings
        muc = settings.page_muc or self.bridge.config.rooms.service
        body = {"websocket": settings.page_websocket, "domain": settings.page_domain, "muc": muc}
        return json.dumps(body).encode()

    async def _page_root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/web/", headers=self._page_headers)

    async def _page_file(self, request: web.Request) -> web.Response:
        found = self._web.get(request.match_info["path"] or "index.html")
        if found is None:
            raise web.HTTPNotFound(headers=self._page_headers)
        body, content_type = found
        return web.Response(body=body, headers={**self._page_headers, "Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, body = health(self.bridge)
        return web.json_response(body, status=200 if healthy else 503)


class _OpsCollector(Collector):
    """The listener's own counters, and the edge's unverified-traffic budget."""

    def __init__(self, server: OpsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        guard = server.guard
        yield GaugeMetricFamily(
            "udp2xmpp_http_connections_open",
            "Connections open to the /metrics and /healthz listener.",
            value=guard.open if guard is not None else 0,
        )
        yield CounterMetricFamily(
            "udp2xmpp_http_connections",
            "Connections the listener accepted.",
            value=guard.accepted if guard is not None else 0,
        )
        shed = CounterMetricFamily(
            "udp2xmpp_http_connections_shed",
            "Connections the listener closed itself: over_cap (the oldest, for a new one past "
            "http.max_connections), too_long (open past http.max_connection_seconds).",
            labels=["reason"],
        )
        shed.add_metric(["over_cap"], guard.shed_over_cap if guard is not None else 0)
        shed.add_metric(["too_long"], guard.shed_too_long if guard is not None else 0)
        yield shed
        yield CounterMetricFamily(
            "udp2xmpp_http_accept_errors",
            "Failed accepts of the listener (out of file descriptors or memory).",
            value=server.accept_errors,
        )
        yield from server.bridge.edge.collect_metrics()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
