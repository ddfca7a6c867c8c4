"""The operations listener: ``/metrics`` (Prometheus) and ``/healthz``, over aiohttp.

It runs in the bridge's own event loop (no thread) and only reads: a scrape
turns the bridge's counters into metric families (`udp2xmpp.metrics`).
``/healthz`` answers 200 with a small JSON body while the bridge is connected
to its XMPP server and receiving datagrams, 503 (same body) otherwise.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger(__name__)


def health(bridge: Bridge) -> tuple[bool, dict[str, Any]]:
    """Whether the bridge is doing its job, and the details /healthz shows."""
    sink = bridge.sink
    listening = [source for source in bridge.sources if source.listening]
    healthy = sink.online and bool(listening) and len(listening) == len(bridge.sources)
    state = getattr(sink, "state", "online" if sink.online else "disconnected")
    return healthy, {
        "status": "ok" if healthy else "unavailable",
        "xmpp": state,
        "udp": [_hostport(source.host, source.port) for source in listening],
        "rooms": len(sink.joined_rooms()),
        "pending": sink.pending,
    }


class OpsServer:
    """Serves /metrics and /healthz for one bridge on one TCP address."""

    def __init__(self, bridge: Bridge, registry: CollectorRegistry, host: str, port: int) -> None:
        self.bridge = bridge
        self.registry = registry
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        # No access log: a scrape every few seconds is not news.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        self._started = False

    async def start(self) -> tuple[str, int]:
        """Listen; returns the address really bound (port 0 picks a free one)."""
        await self._runner.setup()
        self._started = True
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        bound = self._runner.addresses[0]
        self.host, self.port = bound[0], bound[1]
        log.info("metrics and health on http://%s/", _hostport(self.host, self.port))
        return self.host, self.port

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, body = health(self.bridge)
        return web.json_response(body, status=200 if healthy else 503)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
