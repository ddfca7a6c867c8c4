"""Lean XMPP room readers for ``benchmarks.fanout``: hundreds per process.

A load generator, not a client library. Each reader is one asyncio protocol:
TCP, STARTTLS (verified against the server's CA file, server name = the
domain), SASL ANONYMOUS (or PLAIN), resource binding, then a MUC join with
``<history maxstanzas="0"/>``. From then on it only scans the bytes it
receives for the marker the benchmark puts in every change's comment,
``xmlrc-fanout:<seq>:<send time>:``, and records the latency (receive time
minus send time, both ``time.monotonic()``: one clock for every process of
the machine). No XML is parsed per message: a byte search per chunk read.

As a worker process (``python -m benchmarks.fanout_readers``) it takes one
JSON command per line on stdin and answers one JSON line on stdout:

* ``{"op": "connect", "readers": [...], "room": ..., "ca_file": ..., "parallel": N}``:
  connect and join more readers (each ``{"host", "port", "domain", "mechanism",
  "nick"}``, optionally ``"user"``/``"password"`` for PLAIN);
* ``{"op": "track", "first": seq}``: from now on record every change from
  ``seq`` on (and reset the worker's CPU clock);
* ``{"op": "wait", "target": seq, "timeout": s, "quiet": q}``: until every reader
  has seen ``seq``, or ``timeout``, or no reader got anything new for ``q`` s;
* ``{"op": "report", "first": a, "last": b, "bucket": n}``: per-reader and merged
  figures for the changes ``a..b``, the worst latency of every ``n`` changes, the
  worker's CPU since ``track``;
* ``{"op": "close"}``: close every connection and exit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any

MARKER = b"xmlrc-fanout:"
STREAM_NS = "http://etherx.jabber.org/streams"
# Latency histogram bins: 0.1 ms.
BINS_PER_MS = 10


def marker_comment(seq: int, sent: float) -> str:
    """The comment carrying a change's sequence number and send time."""
    return f"xmlrc-fanout:{seq}:{sent:.6f}:"


def ssl_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


@dataclass
class ReaderSpec:
    host: str
    port: int
    domain: str
    nick: str
    mechanism: str = "ANONYMOUS"
    user: str = ""
    password: str = ""


class XmppError(RuntimeError):
    """The server refused a step, or closed the stream."""


class LeanReader(asyncio.Protocol):
    """One reader connection: the handshake with awaited byte patterns, then a marker scan."""

    def __init__(self, spec: ReaderSpec) -> None:
        self.spec = spec
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._tail = b""
        self._waiter: asyncio.Future[None] | None = None
        self.streaming = False
        self.joined_at = 0.0
        self.last_seq = 0
        self.received = 0
        self.track_from = 1 << 62
        self.seqs: array[int] = array("q")
        self.lats: array[float] = array("d")
        self.recv_last = 0.0
        self.closed = False
        self.closed_at = 0.0
        self.bytes_received = 0
        self.stream_error = ""

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self.streaming:
            if b"<stream:error" in data or b"</stream:stream>" in data:
                start = data.find(b"<stream:error")
                self.stream_error = data[max(0, start) : start + 300].decode(errors="replace")
            self._scan(data)
            return
        self._buf += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closed_at = time.monotonic()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(XmppError(f"connection closed ({exc or 'EOF'})"))

    # ------------------------------------------------------------ streaming

    def _scan(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self._tail + data if self._tail else data
        pos = 0
        keep = len(MARKER) - 1
        while True:
            i = buf.find(MARKER, pos)
            if i < 0:
                self._tail = buf[-keep:]
                return
            j = buf.find(b":", i + len(MARKER))
            k = buf.find(b":", j + 1) if j >= 0 else -1
            if k < 0:
                self._tail = buf[i:]
                return
            try:
                seq = int(buf[i + len(MARKER) : j])
                sent = float(buf[j + 1 : k])
            except ValueError:
                pos = i + len(MARKER)
                continue
            # Each change carries the marker twice (body and <rc comment>), and a
            # room delivers in order: a sequence number not above the last is a repeat.
            if seq > self.last_seq:
                self.last_seq = seq
                self.received += 1
                if seq >= self.track_from:
                    self.seqs.append(seq)
                    self.lats.append(now - sent)
                    self.recv_last = now
            pos = k + 1

    def track(self, first: int) -> None:
        self.track_from = first
        self.seqs = array("q")
        self.lats = array("d")
        self.recv_last = 0.0

    # ------------------------------------------------------------ handshake

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(text.encode())

    async def expect(self, *patterns: bytes, timeout: float = 60.0) -> tuple[bytes, bytes]:
        """Wait for the first of `patterns` in what arrived; return it and everything up
        to its end (consumed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [(self._buf.find(p), p) for p in patterns]
            hits = [(i, p) for i, p in found if i >= 0]
            if hits:
                i, pattern = min(hits)
                end = i + len(pattern)
                chunk = bytes(self._buf[:end])
                del self._buf[:end]
                return pattern, chunk
            if self.closed:
                raise XmppError(f"closed while waiting for {patterns[0]!r}: {bytes(self._buf)!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise XmppError(f"no {patterns[0]!r} within {timeout:g} s: {bytes(self._buf)!r}")
            self._waiter = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._waiter), remaining)
            self._waiter = None

    def _header(self) -> None:
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.spec.domain}' version='1.0' "
            f"xmlns='jabber:client' xmlns:stream='{STREAM_NS}'>"
        )

    async def open(
        self, context: ssl.SSLContext, receive_buffer: int = 0, timeout: float = 60.0
    ) -> None:
        """Connect, STARTTLS, authenticate and bind (`receive_buffer`: SO_RCVBUF, set
        before connecting so the TCP window stays that small)."""
        loop = asyncio.get_running_loop()
        spec = self.spec
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (spec.host, spec.port)), timeout)
        except BaseException:
            sock.close()
            raise
        await loop.create_connection(lambda: self, sock=sock)
        self._header()
        await self.expect(b"</stream:features>", timeout=timeout)
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        pattern, _ = await self.expect(b"<proceed", b"<failure", timeout=timeout)
        if pattern != b"<proceed":
            raise XmppError("STARTTLS refused")
        self._buf.clear()
        assert self.transport is not None
        tls = await loop.start_tls(
            self.transport, self, context, server_hostname=spec.domain,
            ssl_handshake_timeout=timeout,
        )  # fmt: skip
        assert isinstance(tls, asyncio.Transport)
        self.transport = tls
        self._header()
        _, features = await self.expect(b"</stream:features>", timeout=timeout)
        if spec.mechanism.encode() not in features:
            raise XmppError(f"{spec.mechanism} not offered: {features!r}")
        if spec.mechanism == "PLAIN":
            token = base64.b64encode(f"\0{spec.user}\0{spec.password}".encode()).decode()
            self.send(
                f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
            )
        else:
            self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
        pattern, _ = await self.expect(b"<success", b"<failure", timeout=timeout)
        if pattern != b"<success":
            raise XmppError("SASL failure")
        self._buf.clear()
        self._header()
        await self.expect(b"</stream:features>", timeout=timeout)
        self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{spec.nick}</resource></bind></iq>"
        )
        pattern, chunk = await self.expect(b"</jid>", b"</iq>", timeout=timeout)
        if pattern != b"</jid>":
            raise XmppError(f"bind failed: {chunk!r}")

    async def query(self, stanza: str, timeout: float = 30.0) -> bytes:
        """Send an <iq> and return the bytes up to the end of its answer."""
        self.send(stanza)
        _, chunk = await self.expect(b"</iq>", timeout=timeout)
        return chunk

    async def join(self, room: str, timeout: float = 120.0) -> None:
        """Enter `room` without history; then every byte received is scanned for markers."""
        self.send(
            f"<presence to='{room}/{self.spec.nick}'><x xmlns='http://jabber.org/protocol/muc'>"
            "<history maxstanzas='0'/></x></presence>"
        )
        pattern, chunk = await self.expect(
            b"code='110'", b'code="110"', b"type='error'", b'type="error"', timeout=timeout
        )
        if b"110" not in pattern:
            raise XmppError(f"join refused: {chunk[-400:]!r}")
        self.joined_at = time.monotonic()
        self.streaming = True
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan(rest)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.transport.write(b"</stream:stream>")
            self.transport.abort()


# ----------------------------------------------------------------- statistics


def histogram(values_s: array[float] | list[float]) -> Counter[int]:
    return Counter(int(v * 1000 * BINS_PER_MS) for v in values_s)


def percentile_sorted(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def reader_summary(reader: LeanReader, first: int, last: int) -> dict[str, Any]:
    lats = sorted(
        lat for seq, lat in zip(reader.seqs, reader.lats, strict=True) if first <= seq <= last
    )
    return {
        "count": len(lats),
        "p50": percentile_sorted(lats, 0.5) * 1000,
        "p99": percentile_sorted(lats, 0.99) * 1000,
        "max": (lats[-1] * 1000) if lats else float("nan"),
        "host": reader.spec.host,
        "closed": reader.closed,
    }


# ----------------------------------------------------------------- the worker


class Worker:
    def __init__(self) -> None:
        self.readers: list[LeanReader] = []
        self.cpu0 = time.process_time()
        self.wall0 = time.monotonic()

    async def connect(self, command: dict[str, Any]) -> dict[str, Any]:
        context = ssl_context(command["ca_file"])
        room = command["room"]
        gate = asyncio.Semaphore(int(command.get("parallel", 20)))
        errors: list[str] = []
        started = time.monotonic()

        join_timeout = float(command.get("join_timeout", 60))
        retried: list[str] = []

        async def one(raw: dict[str, Any]) -> None:
            async with gate:
                for attempt in range(2):  # one retry, on a new connection
                    spec = ReaderSpec(**raw)
                    if attempt:
                        spec.nick += "-again"
                    reader = LeanReader(spec)
                    try:
                        await reader.open(context)
                        await reader.join(room, timeout=join_timeout)
                    except (OSError, XmppError, TimeoutError, ssl.SSLError) as error:
                        reader.close()
                        where = f"{raw['nick']} via {raw['host']}:{raw['port']}"
                        if attempt:
                            errors.append(f"{where}: {error!s:.300}")
                        else:
                            retried.append(f"{where}: {error!s:.120}")
                        continue
                    self.readers.append(reader)
                    return

        await asyncio.gather(*(one(raw) for raw in command["readers"]))
        return {
            "connected": len(self.readers),
            "failed": len(errors),
            "retried": len(retried),
            "retried_examples": retried[:3],
            "errors": errors[:5],
            "seconds": time.monotonic() - started,
        }

    def track(self, first: int) -> dict[str, Any]:
        for reader in self.readers:
            reader.track(first)
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        return {"ok": True}

    async def wait(self, target: int, timeout: float, quiet: float = 0.0) -> dict[str, Any]:
        """Until every reader has seen `target`, or `timeout`, or (`quiet` > 0) no reader
        got a new change for `quiet` seconds (one that was dropped never comes)."""
        deadline = time.monotonic() + timeout
        progress, moved = -1, time.monotonic()
        while time.monotonic() < deadline:
            if all(r.last_seq >= target or r.closed for r in self.readers):
                break
            now_progress = sum(r.last_seq for r in self.readers)
            if now_progress != progress:
                progress, moved = now_progress, time.monotonic()
            elif quiet and time.monotonic() - moved > quiet:
                break
            await asyncio.sleep(0.05)
        return {
            "reached": sum(r.last_seq >= target for r in self.readers),
            "alive": sum(not r.closed for r in self.readers),
            "min_seq": min((r.last_seq for r in self.readers if not r.closed), default=0),
        }

    def report(self, first: int, last: int, bucket: int = 0) -> dict[str, Any]:
        """`bucket`: also the worst latency of every `bucket` consecutive changes (a series)."""
        cpu = time.process_time() - self.cpu0
        wall = time.monotonic() - self.wall0
        merged: Counter[int] = Counter()
        per_reader = []
        series = [0.0] * ((last - first) // bucket + 1) if bucket else []
        for reader in self.readers:
            per_reader.append(reader_summary(reader, first, last))
            if bucket:
                for seq, lat in zip(reader.seqs, reader.lats, strict=True):
                    if first <= seq <= last:
                        index = (seq - first) // bucket
                        series[index] = max(series[index], lat * 1000)
            merged.update(
                histogram(
                    [lat for seq, lat in zip(reader.seqs, reader.lats, strict=True)
                     if first <= seq <= last]
                )
            )  # fmt: skip
        return {
            "readers": len(self.readers),
            "closed": sum(r.closed for r in self.readers),
            "per_reader": per_reader,
            "histogram": {str(k): v for k, v in merged.items()},
            "last_receive": max((r.recv_last for r in self.readers), default=0.0),
            "series": series,
            "cpu": cpu,
            "wall": wall,
        }

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    worker = Worker()
    try:
        while line := await stdin.readline():
            command = json.loads(line)
            op = command["op"]
            if op == "connect":
                answer = await worker.connect(command)
            elif op == "track":
                answer = worker.track(int(command["first"]))
            elif op == "wait":
                answer = await worker.wait(
                    int(command["target"]), float(command["timeout"]),
                    float(command.get("quiet", 0)),
                )  # fmt: skip
            elif op == "report":
                answer = worker.report(
                    int(command["first"]), int(command["last"]), int(command.get("bucket", 0))
                )
            elif op == "close":
                break
            else:
                answer = {"error": f"unknown op {op!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        worker.close()
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(serve())
