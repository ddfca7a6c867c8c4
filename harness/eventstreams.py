"""A throwaway EventStreams server on loopback: KafkaSSE's wire protocol, without Kafka.

Wikimedia's EventStreams (KafkaSSE) serves ``GET /v2/stream/{streams}`` as
Server-Sent Events: every message is ``event: message``, ``id: <JSON list>``,
``data: <the event>``, where the id lists, for every topic-partition the
connection reads, the position after the messages sent so far (``offset``, the
next one to read; or ``timestamp``, in milliseconds; ``offset: -1`` for a
partition nothing was read from since connecting at "latest"). A client resumes
by sending that id back as ``Last-Event-ID``; ``?since=`` (ISO 8601 or Unix
milliseconds) starts at a time; neither starts at the latest (only new
messages). The connection opens with a ``:ok`` comment.

Here each stream has its topics (``eqiad.`` and ``codfw.`` prefixes) of one
partition each, holding the events given or `publish`-ed (an event goes to the
topic of its ``meta.topic`` when it names one of them). Faults, as bot authors
meet them: a forced close every `close_every` seconds or `close_after_events`
messages (clean, or `abrupt`), a stall (`stall_next`: the next connection goes
silent, no byte, after some events), refusals (`refuse_next`: e.g. 429 with
Retry-After), canary events (`canary_every`), and a repeated overlap on resume
(`resume_overlap`: at-least-once, as after a datacenter switch); `interval` paces
the messages.

    server = EventStreamsServer(events, close_after_events=10)
    await server.start()
    url = server.url()          # http://127.0.0.1:PORT/v2/stream/recentchange
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

#: Stream name -> its topics, as Wikimedia configures them (two datacenters).
STREAM_TOPICS: dict[str, tuple[str, ...]] = {
    "recentchange": ("eqiad.mediawiki.recentchange", "codfw.mediawiki.recentchange"),
    "revision-create": ("eqiad.mediawiki.revision-create", "codfw.mediawiki.revision-create"),
}
STREAM_NAMES = {
    "recentchange": "mediawiki.recentchange",
    "revision-create": "mediawiki.revision-create",
}


@dataclass
class Message:
    """One message of a topic's only partition."""

    topic: str
    offset: int
    timestamp: int  # milliseconds, as Kafka's message timestamp
    data: str  # the JSON text sent as ``data:``
    seq: int  # its place in the order the server received messages


@dataclass
class Refusal:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def _ms_of(event: dict[str, Any]) -> int | None:
    meta = event.get("meta")
    dt = meta.get("dt") if isinstance(meta, dict) else None
    if not isinstance(dt, str):
        return None
    return int(datetime.fromisoformat(dt.replace("Z", "+00:00")).timestamp() * 1000)


def canary_event(number: int) -> dict[str, Any]:
    """A canary like Wikimedia's probes: a valid-looking event with ``meta.domain`` canary."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "$schema": "/mediawiki/recentchange/1.0.0",
        "meta": {
            "uri": "https://canary/Canary",
            "id": f"00000000-0000-4000-8000-{number:012d}",
            "dt": now,
            "domain": "canary",
            "stream": "mediawiki.recentchange",
        },
        "id": 900_000_000 + number,
        "type": "edit",
        "namespace": 0,
        "title": "Canary",
        "comment": "canary event",
        "timestamp": int(datetime.now(UTC).timestamp()),
        "user": "Canary",
        "bot": False,
        "minor": False,
        "length": {"old": 1, "new": 1},
        "revision": {"old": 1, "new": 2},
        "server_url": "https://canary",
        "server_name": "canary",
        "server_script_path": "/w",
        "wiki": "canarywiki",
    }


class EventStreamsServer:
    """See the module docstring. Every connection and the listener end at `stop`."""

    def __init__(
        self,
        events: list[dict[str, Any]] = (),  # type: ignore[assignment]
        *,
        id_mode: str = "offset",
        close_every: float | None = None,
        close_after_events: int | None = None,
        abrupt: bool = False,
        keepalive: float | None = None,
        canary_every: int | None = None,
        resume_overlap: int = 0,
        interval: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        if id_mode not in ("offset", "timestamp"):
            raise ValueError("id_mode: offset or timestamp")
        self.id_mode = id_mode
        self.close_every = close_every
        self.close_after_events = close_after_events
        self.abrupt = abrupt
        self.keepalive = keepalive
        self.canary_every = canary_every
        self.resume_overlap = resume_overlap
        #: Seconds between two messages of a connection (0: as fast as the client reads).
        self.interval = interval
        self.host = host
        self.port = 0
        self.logs: dict[str, list[Message]] = {t: [] for ts in STREAM_TOPICS.values() for t in ts}
        self._seq = 0
        self._real = 0
        self._canaries = 0
        #: Every request: its path, query and the headers a client chooses.
        self.requests: list[dict[str, Any]] = []
        #: Messages written, over all connections (canaries included); connections served.
        self.sent = 0
        self.connections = 0
        self.closes = 0
        self._refusals: list[Refusal] = []
        self._stall_after: int | None = None
        self._new = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.publish(list(events))

    # -- the log -----------------------------------------------------------------------

    def publish(self, events: list[dict[str, Any]], stream: str = "recentchange") -> None:
        """Append events to the stream's topics (and wake the connections reading it)."""
        topics = STREAM_TOPICS[stream]
        for event in events:
            self._append(event, topics)
            self._real += 1
            if self.canary_every and self._real % self.canary_every == 0:
                self._canaries += 1
                self._append(canary_event(self._canaries), topics)
        self._new.set()
        self._new = asyncio.Event()

    def _append(self, event: dict[str, Any], topics: tuple[str, ...]) -> None:
        meta = event.get("meta")
        named = meta.get("topic") if isinstance(meta, dict) else None
        topic = named if named in topics else topics[0]
        log = self.logs[topic]
        previous = log[-1].timestamp if log else 0
        stamp = max(previous + 1, _ms_of(event) or 0)
        text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        log.append(Message(topic, len(log), stamp, text, self._seq))
        self._seq += 1

    # -- faults --------------------------------------------------------------------------

    def refuse_next(self, status: int = 429, count: int = 1, **headers: str) -> None:
        """The next `count` requests get `status` (headers e.g. ``Retry_After="1"``)."""
        fixed = {name.replace("_", "-"): value for name, value in headers.items()}
        self._refusals.extend(Refusal(status, fixed) for _ in range(count))

    def stall_next(self, after_events: int = 0) -> None:
        """The next connection sends `after_events` messages, then nothing at all."""
        self._stall_after = after_events

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v2/stream/{streams}", self._stream)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self._stopping.set()
        self._new.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, streams: str = "recentchange") -> str:
        return f"http://{self.host}:{self.port}/v2/stream/{streams}"

    # -- one connection ------------------------------------------------------------------

    def _start_positions(
        self, topics: list[str], last_id: str | None, since: str | None
    ) -> dict[str, int | None]:
        """Topic -> next offset to send (None: "latest", nothing read yet)."""
        positions: dict[str, int | None] = {t: len(self.logs[t]) for t in topics}
        latest: set[str] = set(topics)
        if last_id:
            assignments = json.loads(last_id)
            if not isinstance(assignments, list):
                raise ValueError("Last-Event-ID must be a JSON list")
            for item in assignments:
                topic = item["topic"]
                if topic not in positions:
                    continue
                if "offset" in item and item["offset"] >= 0:
                    positions[topic] = max(0, int(item["offset"]) - self.resume_overlap)
                    latest.discard(topic)
                elif "timestamp" in item:
                    start = self._offset_at(topic, int(item["timestamp"]))
                    positions[topic] = max(0, start - self.resume_overlap)
                    latest.discard(topic)
        elif since is not None:
            if since.isdigit():
                ms = int(since)
            else:
                ms = int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() * 1000)
            for topic in topics:
                positions[topic] = self._offset_at(topic, ms)
                latest.discard(topic)
        return {t: (None if t in latest else positions[t]) for t in topics}

    def _offset_at(self, topic: str, ms: int) -> int:
        for message in self.logs[topic]:
            if message.timestamp >= ms:
                return message.offset
        return len(self.logs[topic])

    def _event_id(
        self, topics: list[str], seen: dict[str, Message | None], starts: dict[str, int | None]
    ) -> str:
        out = []
        for topic in topics:
            last = seen[topic]
            item: dict[str, Any] = {"topic": topic, "partition": 0}
            if last is None:
                start = starts[topic]
                item["offset"] = -1 if start is None else start
            elif self.id_mode == "timestamp":
                item["timestamp"] = last.timestamp + 1
            else:
                item["offset"] = last.offset + 1
            out.append(item)
        return json.dumps(out, separators=(",", ":"))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve(request)
        except ConnectionResetError:  # the client hung up (a reconnect after a stall...)
            return web.Response(status=499)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "last_event_id": request.headers.get("Last-Event-ID"),
                "user_agent": request.headers.get("User-Agent"),
                "accept": request.headers.get("Accept"),
            }
        )
        if self._refusals:
            refusal = self._refusals.pop(0)
            return web.json_response(
                {"status": refusal.status, "type": "error", "title": "refused"},
                status=refusal.status,
                headers=refusal.headers,
            )
        names = request.match_info["streams"].split(",")
        unknown = [n for n in names if n not in STREAM_TOPICS]
        if unknown:
            return web.json_response(
                {"status": 404, "title": "Not Found", "detail": f"no such stream: {unknown}"},
                status=404,
            )
        topics = [t for n in names for t in STREAM_TOPICS[n]]
        try:
            starts = self._start_positions(
                topics, request.headers.get("Last-Event-ID"), request.query.get("since")
            )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"status": 400, "detail": str(exc)}, status=400)
        positions = {t: (len(self.logs[t]) if p is None else p) for t, p in starts.items()}
        seen: dict[str, Message | None] = {t: None for t in topics}
        stall_after, self._stall_after = self._stall_after, None
        self.connections += 1
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        await response.write(b":ok\n\n")
        loop = asyncio.get_running_loop()
        opened = loop.time()
        sent_here = 0
        while not self._stopping.is_set():
            if self.close_every is not None and loop.time() - opened >= self.close_every:
                break
            if self.close_after_events is not None and sent_here >= self.close_after_events:
                break
            if stall_after is not None and sent_here >= stall_after:
                await self._silent(request)
                return response
            pending = [
                self.logs[t][positions[t]] for t in topics if positions[t] < len(self.logs[t])
            ]
            if not pending:
                new = self._new
                wait = self.keepalive
                if self.close_every is not None:
                    left = self.close_every - (loop.time() - opened)
                    wait = left if wait is None else min(wait, left)
                try:
                    await asyncio.wait_for(new.wait(), wait)
                except TimeoutError:
                    if self.keepalive is not None:
                        await response.write(b":\n")
                continue
            message = min(pending, key=lambda m: m.seq)
            positions[message.topic] += 1
            seen[message.topic] = message
            frame = (
                f"event: message\nid: {self._event_id(topics, seen, starts)}\n"
                f"data: {message.data}\n\n"
            )
            await response.write(frame.encode())
            sent_here += 1
            self.sent += 1
            if self.interval:
                await asyncio.sleep(self.interval)
        self.closes += 1
        if self.abrupt and request.transport is not None:
            request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _silent(self, request: web.Request) -> None:
        """No byte more, until the client hangs up or the server stops."""
        for _ in range(100_000):
            transport = request.transport
            if self._stopping.is_set() or transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)


def load_jsonl(path: str) -> list[dict[str, Any]]:
    """Events from a JSON-lines file (one object a line)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def with_meta(event: dict[str, Any], number: int) -> dict[str, Any]:
    """A MediaWiki JSON feed packet in EventStreams' envelope (``$schema``, ``meta``)."""
    out = copy.deepcopy(event)
    out.pop("channel", None)  # the UDP feed's IRC channel; EventStreams has none
    dt = datetime.fromtimestamp(int(event.get("timestamp", 0)), UTC)
    wrapped = {
        "$schema": "/mediawiki/recentchange/1.0.0",
        "meta": {
            "uri": f"{event.get('server_url', '')}/wiki/{event.get('title', '')}",
            "id": f"00000000-0000-4000-9000-{number:012d}",
            "dt": dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "domain": event.get("server_name", ""),
            "stream": "mediawiki.recentchange",
        },
    }
    wrapped.update(out)
    return wrapped
