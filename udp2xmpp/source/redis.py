"""Redis source: MediaWiki's ``RedisPubSubFeedEngine`` channels, read with pub/sub.

MediaWiki PUBLISHes each change's formatted line (JSON or XML formatter, no
prefix) on a channel. `RedisFeed` SUBSCRIBEs to the configured channels (and
PSUBSCRIBEs to the patterns), decodes each message with the one wire format
(`decode_datagram`, as for a datagram) and hands the change to the bridge's
``accept(change, "redis:<channel>")``. A bad message is counted by reason and
logged (rate-limited), never more. When the connection is lost it reconnects
with backoff and jitter; while it is not subscribed its health is false.

Pub/sub keeps nothing: what is published while no subscriber is connected is
lost for this bridge (run two, or fill gaps with the API poller, rc2udp).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from xmlrc.wire import Rejection, decode_datagram
from xmlrc.wire.datagram import MAX_DATAGRAM
from xmlrc.xmpp.session import Backoff

from ..config import RedisSettings
from ..throttled_log import RateLimitedLog
from .feed import Accept

__all__ = ["RedisFeed", "RedisStats"]

log = logging.getLogger(__name__)

#: Seconds between PINGs on an idle subscription, so a dead peer is noticed.
HEALTH_CHECK_INTERVAL = 15
#: Seconds to connect (TCP, TLS and AUTH) before the attempt counts as failed.
CONNECT_TIMEOUT = 10.0
#: A channel name is shown in log lines and origins up to this many characters.
_NAME_LIMIT = 100


@dataclass
class RedisStats:
    """What the Redis feed counted: messages in, their fate, reconnections."""

    received: int = 0
    accepted: int = 0
    #: Messages the bridge's intake refused (counted there under its reason too).
    refused: int = 0
    #: Messages that could not be decoded, by reason (too_large, bad_json, ...).
    rejected: Counter[str] = field(default_factory=Counter)
    #: Times the feed subscribed again after losing its connection (or failing to connect).
    reconnects: int = 0


class RedisFeed:
    """Subscribes to Redis channels and patterns; each message becomes one change."""

    name = "redis"

    def __init__(
        self,
        settings: RedisSettings,
        *,
        max_message: int = MAX_DATAGRAM,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.max_message = max_message
        self.stats = RedisStats()
        self.backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self.connected = False
        self.last_error: str | None = None
        self._accept: Accept | None = None
        self._task: asyncio.Task[None] | None = None
        self._bad_input_log = RateLimitedLog(log)

    async def start(self, accept: Accept) -> None:
        self._accept = accept
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.connected = False

    # ------------------------------------------------------------- the decode path

    def on_message(self, channel: bytes, data: bytes) -> bool:
        """Decode one message and hand its change to the bridge; False when dropped."""
        self.stats.received += 1
        origin = "redis:" + channel.decode("utf-8", "replace")[:_NAME_LIMIT]
        result = decode_datagram(data, max_bytes=self.max_message)
        if isinstance(result, Rejection):
            self.stats.rejected[result.reason.value] += 1
            self._bad_input_log.warning("dropped a message from %s: %s", origin, result)
            return False
        assert self._accept is not None, "start() first"
        if self._accept(result, origin):
            self.stats.accepted += 1
            return True
        self.stats.refused += 1
        return False

    # ------------------------------------------------------------- the connection

    def _client(self) -> aioredis.Redis:
        s = self.settings
        options: dict[str, Any] = {}
        if s.url.startswith("rediss://") and s.ca_file is not None:
            options["ssl_ca_certs"] = s.ca_file
        return aioredis.Redis.from_url(
            s.url,
            username=s.username,
            password=s.password,
            # Our loop reconnects, with backoff, and counts it: no silent retries inside.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=HEALTH_CHECK_INTERVAL,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            **options,
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            if attempt:
                delay = self.backoff.next()
                log.info("reconnecting to Redis in %.1f s", delay)
                await asyncio.sleep(delay)
            attempt += 1
            try:
                await self._subscribe_and_read(reconnect=attempt > 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection is gone (or never came): try again
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self.connected:
                    log.warning("lost the Redis connection: %s", self.last_error)
                else:
                    log.warning("cannot subscribe on Redis: %s", self.last_error)
            finally:
                self.connected = False

    async def _subscribe_and_read(self, *, reconnect: bool) -> None:
        s = self.settings
        client = self._client()
        pubsub = client.pubsub()
        try:
            if s.channels:
                await pubsub.subscribe(*s.channels)
            if s.patterns:
                await pubsub.psubscribe(*s.patterns)
            pending = len(s.channels) + len(s.patterns)
            while True:  # until the connection fails or the feed is stopped
                message = await pubsub.get_message(timeout=HEALTH_CHECK_INTERVAL)
                if message is None:
                    continue
                kind = message["type"]
                if kind in ("message", "pmessage"):
                    data = message["data"]
                    if isinstance(data, bytes):
                        try:
                            self.on_message(message["channel"], data)
                        except Exception:  # one message must never stop the feed
                            log.exception("handling a Redis message failed")
                elif kind in ("subscribe", "psubscribe") and pending:
                    pending -= 1
                    if not pending:  # the server has confirmed every subscription
                        self.connected = True
                        self.last_error = None
                        self.backoff.reset()
                        if reconnect:
                            self.stats.reconnects += 1
                        log.info(
                            "subscribed on Redis %s: channels %s, patterns %s",
                            _where(s.url),
                            list(s.channels),
                            list(s.patterns),
                        )
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            with contextlib.suppress(Exception):
                await client.aclose()

    # ------------------------------------------------------------- health, metrics

    def health(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {
            "connected": self.connected,
            "server": _where(self.settings.url),
            "channels": list(self.settings.channels),
            "patterns": list(self.settings.patterns),
            "reconnects": self.stats.reconnects,
        }
        if self.last_error is not None:
            details["last_error"] = self.last_error
        return self.connected, details

    def collect_metrics(self) -> Iterator[Metric]:
        prefix = "udp2xmpp_redis"
        stats = self.stats
        yield CounterMetricFamily(
            f"{prefix}_messages_received",
            "Messages read from the Redis channels, whatever became of them.",
            value=stats.received,
        )
        yield CounterMetricFamily(
            f"{prefix}_changes_accepted",
            "Messages decoded and accepted by the bridge's intake.",
            value=stats.accepted,
        )
        yield CounterMetricFamily(
            f"{prefix}_changes_refused",
            "Messages decoded but refused by the bridge's intake (its reason in "
            "udp2xmpp_datagrams_rejected).",
            value=stats.refused,
        )
        rejected = CounterMetricFamily(
            f"{prefix}_messages_rejected",
            "Messages that could not be decoded, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            f"{prefix}_reconnects",
            "Times the feed subscribed again after losing its connection.",
            value=stats.reconnects,
        )
        yield GaugeMetricFamily(
            f"{prefix}_connected",
            "1 while subscribed on Redis, else 0 (what is published then is lost).",
            value=1 if self.connected else 0,
        )


def _where(url: str) -> str:
    """The URL's scheme, host and port, for logs (the config allows no credentials in it)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
