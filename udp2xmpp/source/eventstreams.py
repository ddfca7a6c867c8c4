"""`EventStreamsFeed`: changes read from Wikimedia's EventStreams (Server-Sent Events).

One long HTTP GET of ``text/event-stream`` (aiohttp's streaming response, parsed
by `udp2xmpp.source.sse`). Each ``message`` event's data is a
``mediawiki/recentchange`` object, decoded by the one JSON decoder
(`xmlrc.wire.jsonfeed.change_from_json`) and handed to the bridge's ``accept``.

Resuming without loss. Every event carries an SSE ``id``: KafkaSSE's JSON list of
``{topic, partition, offset}`` (or ``timestamp``) objects, the position after it.
After a disconnect the last one is sent back as ``Last-Event-ID`` and the server
continues there. It is also kept in `state_file` (written atomically, at most every
`state_interval` seconds, and on stop), so a restart continues where the bridge
stopped; `since` only says where the very first start begins. Delivery is
at-least-once (a resume in another datacenter, or a crash between two writes of
the state file, repeats a few events), so the ids of recent changes are remembered
(`dedupe_memory`, and the last ones in the state file too) and a repeat is dropped:
rooms see each change once.

Never stalled in silence. No byte (event or ``:`` comment) for `stall_seconds`
means the connection is dead: reconnect. The server closes every connection after
a while (Wikimedia: about 15 minutes); that is routine, logged at info and counted
(reason ``server_closed``), and the feed reconnects at once. HTTP 429 (and 503)
waits the Retry-After the server asks for; 5xx and network errors back off with
jitter (`xmlrc.xmpp.session.Backoff`). TLS is verified.

Canary events (``meta.domain == "canary"``, Wikimedia's probes) are dropped and
counted; the `wikis` / `exclude_wikis` lists drop the rest before decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import ssl
import tempfile
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from xmlrc.wire import DecodeError
from xmlrc.wire.coerce import strict_json
from xmlrc.wire.jsonfeed import change_from_json
from xmlrc.wire.model import utc_from_iso
from xmlrc.xmpp.session import Backoff

from ..config import EventStreamsSettings
from ..metrics import DelayHistogram
from ..throttled_log import RateLimitedLog
from .feed import Accept
from .sse import SseEvent, SseParser

__all__ = ["EventStreamsFeed", "retry_after_seconds", "wiki_matcher"]

log = logging.getLogger(__name__)

#: The name of the feed: in log lines, /healthz and the metric names.
NAME = "eventstreams"
_PREFIX = f"udp2xmpp_{NAME}"
#: Upper bounds (seconds) of the lag histogram (now minus meta.dt).
LAG_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400)
#: Recent change ids written to the state file (the rest of the memory is not kept).
STATE_RECENT = 2000
#: Schemas that are recent changes; other streams on the same connection are skipped.
RECENTCHANGE_SCHEMA = "/mediawiki/recentchange/"
#: Label of the wikis past `max_wiki_labels`.
OTHER = "other"
_READ_SIZE = 1 << 16


def wiki_matcher(allow: tuple[str, ...], deny: tuple[str, ...]) -> Any:
    """A function wiki ID -> None (allowed) or the list that drops it ("allow", "deny")."""
    allow_exact = {a for a in allow if not _is_pattern(a)}
    allow_patterns = [a for a in allow if _is_pattern(a)]
    deny_exact = {d for d in deny if not _is_pattern(d)}
    deny_patterns = [d for d in deny if _is_pattern(d)]
    cache: dict[str, str | None] = {}

    def verdict(wiki: str) -> str | None:
        if wiki in cache:
            return cache[wiki]
        if wiki in deny_exact or any(fnmatch.fnmatchcase(wiki, p) for p in deny_patterns):
            result: str | None = "deny"
        else:
            allowed = not allow or wiki in allow_exact
            allowed = allowed or any(fnmatch.fnmatchcase(wiki, p) for p in allow_patterns)
            result = None if allowed else "allow"
        if len(cache) >= 100_000:  # wiki IDs come from the stream: bound the cache
            cache.clear()
        cache[wiki] = result
        return result

    return verdict


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from `now` (Unix time)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


class EventStreamsFeed:
    """The ``[eventstreams]`` source; see the module docstring."""

    def __init__(self, settings: EventStreamsSettings) -> None:
        self.settings = settings
        contact = f" ({settings.contact})" if settings.contact else ""
        self.user_agent = settings.user_agent + contact
        self._verdict = wiki_matcher(settings.wikis, settings.exclude_wikis)
        #: The last SSE id seen: sent as Last-Event-ID, kept in the state file.
        self.position: str | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()
        # Counters, read by `collect_metrics` when scraped.
        self.events: Counter[str] = Counter()  # accepted by us, per wiki label
        self.filtered: Counter[str] = Counter()  # by the list that dropped them
        self.undecodable: Counter[str] = Counter()
        self.reconnects: Counter[str] = Counter()
        self.canaries = 0
        self.duplicates = 0
        self.refused = 0  # by the bridge (routing, size...: counted there by reason)
        self.skipped = 0  # other schemas or event types, oversized events
        self.connections = 0
        self.state_writes = 0
        self.lag = DelayHistogram(LAG_BUCKETS)
        self.connected = False
        #: Seconds waited before the latest reconnection (the Retry-After, or a backoff).
        self.last_wait = 0.0
        #: The latest reconnections: (reason, seconds waited before it).
        self.history: deque[tuple[str, float]] = deque(maxlen=100)
        self._labels: set[str] = set()
        self._accept: Accept | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._started_at = time.monotonic()
        self._last_event: float | None = None
        self._dirty = False
        self._saved_at = 0.0
        self._bad_log = RateLimitedLog(log)

    @property
    def name(self) -> str:
        return NAME

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, accept: Accept) -> None:
        self._accept = accept
        self._load_state()
        self._started_at = time.monotonic()
        connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=1)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True
        )
        self._task = asyncio.create_task(self._run(), name="eventstreams")
        log.info("reading %s", self.settings.url)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
        self.connected = False
        try:
            self.save_state()
        except Exception:
            log.exception("could not write %s", self.settings.state_file)

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if urlsplit(self.settings.url).scheme != "https":
            return True  # plain HTTP (a loopback test server): nothing to verify
        context = ssl.create_default_context(cafile=self.settings.ca_file)
        if not self.settings.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # -- the connection loop ---------------------------------------------------------

    async def _run(self) -> None:
        s = self.settings
        backoff = Backoff(s.backoff_initial, s.backoff_max)
        while True:
            reason, delay = await self._connect_once(backoff)
            self.connected = False
            self.reconnects[reason] += 1
            self.last_wait = delay
            self.history.append((reason, delay))
            if delay > 0:
                await asyncio.sleep(delay)

    def _request(self) -> tuple[str, dict[str, str]]:
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "User-Agent": self.user_agent,
        }
        url = self.settings.url
        if self.position:
            headers["Last-Event-ID"] = self.position
        elif self.settings.since is not None:  # until the first event gives a position
            parts = urlsplit(url)
            query = "&".join(
                q for q in (parts.query, urlencode({"since": self.settings.since})) if q
            )
            url = urlunsplit(parts._replace(query=query))
        return url, headers

    async def _connect_once(self, backoff: Backoff) -> tuple[str, float]:
        """One connection, read until it ends; the reason it ended and the wait before the next."""
        s = self.settings
        assert self._session is not None
        url, headers = self._request()
        received = 0
        try:
            async with asyncio.timeout(s.connect_timeout):
                response = await self._session.get(url, headers=headers)
            async with response:
                if response.status != 200:
                    return self._refused(response, backoff)
                kind = response.headers.get("Content-Type", "")
                if not kind.startswith("text/event-stream"):
                    log.error("%s answered %s, not an event stream", s.url, kind or "no type")
                    return "bad_response", backoff.next()
                self.connections += 1
                self.connected = True
                parser = SseParser(max_line=s.max_event_bytes)
                events_before = self._total_events()
                while True:
                    try:
                        async with asyncio.timeout(s.stall_seconds):
                            chunk = await response.content.readany()
                    except TimeoutError:
                        log.warning(
                            "no event or comment from %s for %g s: reconnecting",
                            s.url,
                            s.stall_seconds,
                        )
                        return "stall", 0.0 if received else backoff.next()
                    if not chunk:
                        break
                    received += len(chunk)
                    for event in parser.feed(chunk):
                        self._on_event(event)
                if self._total_events() > events_before:
                    backoff.reset()
                log.info("%s closed the stream (routine); resuming", s.url)
                retry = (parser.retry or 0) / 1000
                return "server_closed", min(retry, s.backoff_max)
        except TimeoutError:
            log.warning("%s: no response within %g s", s.url, s.connect_timeout)
            return "timeout", backoff.next()
        except aiohttp.ClientPayloadError:
            if received:  # cut mid-stream: how a server's forced close often looks
                log.info("%s closed the stream (routine); resuming", s.url)
                return "server_closed", 0.0
            return "network", backoff.next()
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            log.error("TLS with %s failed: %s", s.url, exc)
            return "tls", backoff.next()
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("cannot read %s: %s", s.url, exc or type(exc).__name__)
            return "network", backoff.next()

    def _refused(self, response: aiohttp.ClientResponse, backoff: Backoff) -> tuple[str, float]:
        status = response.status
        s = self.settings
        wait = retry_after_seconds(response.headers.get("Retry-After"), time.time())
        if status == 429 or (status == 503 and wait is not None):
            delay = min(wait, s.max_retry_after) if wait is not None else backoff.next()
            log.warning("%s: HTTP %d, retrying in %.1f s", s.url, status, delay)
            return f"http_{status}", delay
        if status >= 500:
            log.warning("%s: HTTP %d; backing off", s.url, status)
            return "http_5xx", backoff.next()
        log.error("%s: HTTP %d; check eventstreams.url", s.url, status)
        return "http_4xx", backoff.next()

    # -- events ----------------------------------------------------------------------

    def _total_events(self) -> int:
        counts = (self.canaries, self.duplicates, self.skipped, sum(self.filtered.values()))
        return sum(counts) + sum(self.events.values())

    def _on_event(self, event: SseEvent) -> None:
        try:
            self._handle(event)
        finally:
            if event.last_id and event.last_id != self.position:
                self.position = event.last_id
                self._dirty = True
                if time.monotonic() - self._saved_at >= self.settings.state_interval:
                    try:
                        self.save_state()
                    except OSError as exc:
                        self._bad_log.error("cannot write the state file: %s", exc)

    def _handle(self, event: SseEvent) -> None:
        self._last_event = time.monotonic()
        if event.event != "message":
            self.skipped += 1
            if event.event == "error":
                self._bad_log.warning("%s sent an error event: %s", self.settings.url, event.data)
            return
        if event.oversized:
            self.skipped += 1
            self._bad_log.warning(
                "skipped an event over eventstreams.max_event_bytes (%d)",
                self.settings.max_event_bytes,
            )
            return
        try:
            data = strict_json(event.data)
        except DecodeError as exc:
            self.undecodable[exc.reason.value] += 1
            self._bad_log.warning("dropped an event: %s", exc)
            return
        if not isinstance(data, dict):
            self.undecodable["bad_json"] += 1
            return
        meta = data.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("domain") == "canary":
            self.canaries += 1
            return
        schema = data.get("$schema")
        if isinstance(schema, str) and not schema.startswith(RECENTCHANGE_SCHEMA):
            self.skipped += 1  # another stream on the same connection
            return
        wiki = data.get("wiki")
        if isinstance(wiki, str):
            dropped_by = self._verdict(wiki)
            if dropped_by is not None:
                self.filtered[dropped_by] += 1
                return
        try:
            change = change_from_json(data)
        except DecodeError as exc:
            self.undecodable[exc.reason.value] += 1
            self._bad_log.warning("dropped an event: %s", exc)
            return
        if not self._remember(change.stable_id):  # the id rooms and readers dedupe by
            self.duplicates += 1
            return
        self.events[self._label(change.wiki)] += 1
        dt = meta.get("dt")
        if isinstance(dt, str):
            with contextlib.suppress(ValueError):
                self.lag.observe(max(0.0, time.time() - utc_from_iso(dt).timestamp()))
        assert self._accept is not None
        if not self._accept(change, NAME):
            self.refused += 1

    def _remember(self, key: str) -> bool:
        """False when the change was seen already (a resume's overlap)."""
        recent = self._recent
        if key in recent:
            return False
        recent[key] = None
        if len(recent) > self.settings.dedupe_memory:
            recent.popitem(last=False)
        return True

    def _label(self, wiki: str) -> str:
        if wiki in self._labels:
            return wiki
        if len(self._labels) < self.settings.max_wiki_labels:
            self._labels.add(wiki)
            return wiki
        return OTHER

    # -- the state file --------------------------------------------------------------

    def _load_state(self) -> None:
        name = self.settings.state_file
        if name is None:
            return
        try:
            state = json.loads(Path(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("ignoring the unreadable state file %s: %s", name, exc)
            return
        position = state.get("last_event_id") if isinstance(state, dict) else None
        if isinstance(position, str) and position:
            self.position = position
            log.info("resuming %s from %s", self.settings.url, position)
        recent = state.get("recent") if isinstance(state, dict) else None
        if isinstance(recent, list):
            for key in recent[-self.settings.dedupe_memory :]:
                if isinstance(key, str):
                    self._recent[key] = None

    def save_state(self) -> None:
        """Write the resume position and the last change ids (atomically: a temporary
        file renamed over the old one)."""
        name = self.settings.state_file
        self._saved_at = time.monotonic()
        if name is None or not self._dirty:
            return
        keys = list(self._recent)[-STATE_RECENT:]
        text = json.dumps({"version": 1, "last_event_id": self.position, "recent": keys})
        path = Path(name)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._dirty = False
        self.state_writes += 1

    # -- health and metrics ----------------------------------------------------------

    def last_event_age(self) -> float:
        """Seconds since the last event (since the start, before the first)."""
        since = self._last_event if self._last_event is not None else self._started_at
        return max(0.0, time.monotonic() - since)

    def health(self) -> tuple[bool, dict[str, Any]]:
        age = self.last_event_age()
        return age <= 2 * self.settings.stall_seconds, {
            "connected": self.connected,
            "last_event_age": round(age, 1),
            "reconnects": sum(self.reconnects.values()),
        }

    def collect_metrics(self) -> Iterator[Metric]:
        p = _PREFIX
        events = CounterMetricFamily(
            f"{p}_events",
            "Changes read from EventStreams and handed to the bridge.",
            labels=["wiki"],
        )
        for wiki, count in sorted(self.events.items()):
            events.add_metric([wiki], count)
        yield events
        filtered = CounterMetricFamily(
            f"{p}_filtered",
            "Events dropped by eventstreams.wikis (allow) or exclude_wikis (deny).",
            labels=["list"],
        )
        for name in ("allow", "deny"):
            filtered.add_metric([name], self.filtered[name])
        yield filtered
        undecodable = CounterMetricFamily(
            f"{p}_undecodable", "Events that are not valid recent changes.", labels=["reason"]
        )
        for reason, count in sorted(self.undecodable.items()):
            undecodable.add_metric([reason], count)
        yield undecodable
        reconnects = CounterMetricFamily(
            f"{p}_reconnects", "Connections that ended, by why.", labels=["reason"]
        )
        for reason, count in sorted(self.reconnects.items()):
            reconnects.add_metric([reason], count)
        yield reconnects
        for name, value, text in (
            ("canaries", self.canaries, "Canary events (meta.domain canary) dropped."),
            ("duplicates", self.duplicates, "Repeated changes dropped after a resume."),
            (
                "refused",
                self.refused,
                "Changes the bridge refused (by reason: udp2xmpp_datagrams_rejected).",
            ),
            ("skipped", self.skipped, "Events of other schemas or types, or oversized."),
            ("connections", self.connections, "Streams opened."),
            ("state_writes", self.state_writes, "Writes of eventstreams.state_file."),
        ):
            yield CounterMetricFamily(f"{p}_{name}", text, value=value)
        yield HistogramMetricFamily(
            f"{p}_lag_seconds",
            "From an event's meta.dt to its arrival here.",
            buckets=self.lag.cumulative(),
            sum_value=self.lag.sum,
        )
        yield GaugeMetricFamily(
            f"{p}_last_event_age_seconds",
            "Seconds since the last event (since the start before the first).",
            value=self.last_event_age(),
        )
        yield GaugeMetricFamily(
            f"{p}_connected", "1 while a stream is open.", value=int(self.connected)
        )
