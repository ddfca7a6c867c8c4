"""Fan-out: one room, a steady stream, N readers, on Prosody, one ejabberd and a two-node
ejabberd cluster; then one reader that stops reading, beside the others.

    .venv/bin/python -m benchmarks.fanout [--servers prosody,ejabberd,cluster]
        [--rates 30,300] [--readers 10,100,1000] [--seconds 10] [--workers 3]
        [--slow-readers 10] [--slow-rate 300] [--slow-seconds 30] [--no-slow]

The publisher is the real bridge (udp2xmpp, its own process, default
``[delivery]``, a 120 s self-ping timeout) fed UDP datagrams at a steady rate,
publishing into one room. Every change's comment carries its sequence number
and send time (``time.monotonic()``, one clock for every process here), so each
reader measures send -> receive latency itself. The readers are the lean
asyncio readers of ``benchmarks.fanout_readers`` (STARTTLS verified, SASL
ANONYMOUS on the server's anonymous host, a MUC join without history, a byte
search per chunk), spread over ``--workers`` processes that report their CPU.

Each server runs once, with one bridge and one room, and readers are added
step by step (10, then 90 more, then 900 more: first the backlog of the step
before is waited out); at each step every rate is streamed for ``--seconds``
after a warm-up every reader must receive. A cell waits for its last change
at most ``--drain`` seconds; what has not arrived by then counts as lost, and
as infinitely late in the percentiles (shown as ``>N``). Before each cell the
benchmark waits (``--quiet`` s at most) for the machine's other processes to
calm down, and reports what they used meanwhile: this machine is shared.

Per cell: deliveries per second at the readers, latency p50/p99/max over all
deliveries and the worst reader's p99, the server's CPU (utime + stime of its
whole process group from /proc, both nodes for the cluster) per delivery and
in all, the busiest worker's CPU, the other processes' CPU, lost deliveries.

The slow reader: at ``--slow-readers`` readers and ``--slow-rate`` (the cell
just measured is the "without" row), one more reader (SO_RCVBUF 4 KiB, TLS
read buffer 4 KiB; on the cluster through node 2) joins and stops reading, so
the server's send buffer to it fills; a cell with it; its server-side socket
watched in /proc/net/tcp (send queue, when the server closes it) with the
server's RSS; then the slow reader reads again and says what it got.

Server settings (details and why: docs/scaling.md):
Prosody 0.12 from ``harness.prosody``, its anonymous host (``web=True``), MUC
archive in memory, ``network_settings = { send_timeout = 5 }``
(``--prosody-send-timeout``; Prosody's default is 180 s). ejabberd 23.01 from
``harness.ejabberd``, the anonymous host unshaped (``anonymous_shaped=False``),
``max_fsm_queue`` at its default (10,000), and, in the generated config before
start, ``mod_muc`` ``max_users`` and the room default (1,000 and 200 in the
harness) raised to 5,000, and a ``vm.args`` giving every socket a
``send_timeout`` (``--ejabberd-send-timeout``, 15 s: 23.01 does not apply its
listener's ``send_timeout``); ``--ejabberd-dist-buffer`` sets ``+zdbbl``. On
both servers the readers' (visitors') presence is not broadcast
(``--visitor-presence`` restores the default), else every join costs a
presence to every occupant. Compare figures within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from benchmarks.bridge import free_udp_port
from benchmarks.common import BIN, CLOCK_TICKS, PAGE_SIZE, sample_change
from benchmarks.fanout_readers import (
    BINS_PER_MS,
    LeanReader,
    ReaderSpec,
    XmppError,
    marker_comment,
    ssl_context,
)
from harness.ejabberd import EjabberdCluster, EjabberdServer
from harness.prosody import ProsodyServer
from xmlrc.wire import DatagramFormat, encode_datagram

WIKI = "fanoutwiki"
ROOT = Path(__file__).resolve().parent.parent
SLOW_BUFFER = 4096
# Waiting for a change stops when no reader got anything new for this long: a change the
# server dropped (the cluster does, under load) never comes.
STALL = 5.0


# ------------------------------------------------------------------ processes


def _stat_fields(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def group_usage(groups: list[int]) -> tuple[float, float]:
    """CPU seconds (utime + stime) and RSS (MB) of every process in these process groups."""
    cpu = rss = 0.0
    wanted = {str(g) for g in groups}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat_fields(pid)
        if fields is None or fields[2] not in wanted:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        rss += int(fields[21]) * PAGE_SIZE / 2**20
    return cpu, rss


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def _hex_address(host: str, port: int) -> str:
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def tcp_entry(local: tuple[str, int], remote: tuple[str, int]) -> tuple[str, int] | None:
    """(state, send-queue bytes) of the IPv4 TCP socket `local` -> `remote`, or None."""
    want_local, want_remote = _hex_address(*local), _hex_address(*remote)
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            parts = line.split()
            if parts[1] == want_local and parts[2] == want_remote:
                return parts[3], int(parts[4].split(":")[0], 16)
    return None


TCP_STATES = {"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
              "07": "CLOSE", "08": "CLOSE_WAIT", "0B": "CLOSING"}  # fmt: skip


# ------------------------------------------------------------------ servers


@dataclass
class Target:
    """One server under test, as the benchmark sees it."""

    name: str
    description: str
    bridge_server: Any  # what fanout_bridge reads: host, c2s_port, ca_file, domain, muc_domain
    endpoints: list[tuple[str, int]]
    reader_domain: str
    muc_domain: str
    ca_file: Path
    groups: list[int]
    slow_linger: float
    settings: str

    @property
    def room(self) -> str:
        return f"{WIKI}@{self.muc_domain}"


@contextlib.contextmanager
def prosody_target(args: argparse.Namespace) -> Iterator[Target]:
    send_timeout = args.prosody_send_timeout
    extra = f"network_settings = {{ send_timeout = {send_timeout:g} }}" if send_timeout else ""
    muc = "" if args.visitor_presence else (
        "  muc_room_default_presence_broadcast = { moderator = true; participant = true }"
    )  # fmt: skip
    server = ProsodyServer(web=True, muc_log_storage="memory", extra_global=extra, extra_muc=muc)
    try:
        server.add_user("rcbot", "bridgepass")
        server.start()
        assert server.pid is not None
        yield Target(
            name="prosody",
            description="Prosody 0.12.3, anonymous host, MUC archive in memory",
            bridge_server=server,
            endpoints=[(server.host, server.c2s_port)],
            reader_domain=server.anonymous_domain,
            muc_domain=server.muc_domain,
            ca_file=server.ca_file,
            groups=[server.pid],
            slow_linger=send_timeout + 5 if send_timeout else 10,
            settings=f"network_settings.send_timeout = {send_timeout:g} s (default 180)"
            if send_timeout
            else "network_settings.send_timeout at its default, 180 s",
        )
    finally:
        server.cleanup()


def tune_config(node: EjabberdServer, args: argparse.Namespace, limit: int = 5000) -> None:
    """Before the node starts: mod_muc's max_users (1,000 in the harness) and the room
    default (200) raised in its config, as a room of 1,000 readers, the bridge and a slow
    reader needs; with `send_timeout` (seconds), a ``vm.args`` beside the config (which
    ejabberdctl reads) giving every listening socket that send_timeout, as the kernel's
    default: ejabberd 23.01 does not pass its listener's ``send_timeout`` to the socket
    (fixed in 25.10), so without it a c2s socket has none."""
    config = node.directory / "ejabberd.yml"
    text = config.read_text()
    patched = text.replace("    max_users: 1000\n", f"    max_users: {limit}\n", 1).replace(
        "    default_room_options:\n", f"    default_room_options:\n      max_users: {limit}\n", 1
    )
    if patched.count(f"max_users: {limit}") != 2:
        raise RuntimeError(f"could not raise the room limits in {config}")
    if not args.visitor_presence:
        patched = patched.replace(
            "    default_room_options:\n",
            "    default_room_options:\n      presence_broadcast:\n        - moderator\n"
            "        - participant\n",
            1,
        )
    config.write_text(patched)
    vm_args = []
    if args.ejabberd_send_timeout:
        milliseconds = round(args.ejabberd_send_timeout * 1000)
        vm_args.append(f"-kernel inet_default_listen_options [{{send_timeout,{milliseconds}}}]")
    if args.ejabberd_dist_buffer:
        # The distribution buffer past which a send to another node with `nosuspend`
        # (ejabberd_cluster_mnesia:send/2: every stanza to a c2s there) is dropped.
        vm_args.append(f"+zdbbl {args.ejabberd_dist_buffer}")
    if vm_args:
        (node.directory / "vm.args").write_text("\n".join(vm_args) + "\n")


def ejabberd_settings(args: argparse.Namespace) -> str:
    send_timeout = args.ejabberd_send_timeout
    timeout = (
        f"sockets' send_timeout {send_timeout:g} s (vm.args: -kernel inet_default_listen_options)"
        if send_timeout
        else "listener send_timeout 15 s (default; not applied to the socket by 23.01)"
    )
    return (
        f"anonymous host unshaped; max_fsm_queue 10,000 (default); {timeout}; "
        "mod_muc max_users 5,000 (raised for the benchmark)"
        + (f"; +zdbbl {args.ejabberd_dist_buffer} KB" if args.ejabberd_dist_buffer else "")
    )


@contextlib.contextmanager
def ejabberd_target(args: argparse.Namespace) -> Iterator[Target]:
    server = EjabberdServer(anonymous_host=True, anonymous_shaped=False)
    try:
        tune_config(server, args)
        server.start()
        server.add_user("rcbot", "bridgepass")
        assert server.pid is not None
        yield Target(
            name="ejabberd",
            description="ejabberd 23.01, one node, anonymous host unshaped, no MUC archive",
            bridge_server=server,
            endpoints=[(server.host, server.c2s_port)],
            reader_domain=server.anonymous_domain,
            muc_domain=server.muc_domain,
            ca_file=server.ca_file,
            groups=[server.pid],
            slow_linger=10,
            settings=ejabberd_settings(args),
        )
    finally:
        server.cleanup()


@contextlib.contextmanager
def cluster_target(args: argparse.Namespace) -> Iterator[Target]:
    cluster = EjabberdCluster(nodes=2, anonymous_host=True, anonymous_shaped=False)
    try:
        for node in cluster.nodes:
            tune_config(node, args)
        cluster.start()
        cluster.add_user("rcbot", "bridgepass")
        first = cluster.nodes[0]
        yield Target(
            name="cluster",
            description="ejabberd 23.01, two nodes (127.0.0.2, 127.0.0.3), one Mnesia cluster; "
            "the bridge on node 1, readers alternating between the nodes",
            bridge_server=first,
            endpoints=list(cluster.servers),
            reader_domain=cluster.anonymous_domain,
            muc_domain=cluster.muc_domain,
            ca_file=cluster.ca_file,
            groups=[node.pid for node in cluster.nodes if node.pid is not None],
            slow_linger=10,
            settings=ejabberd_settings(args) + "; the slow reader on node 2",
        )
    finally:
        cluster.cleanup()


TARGETS = {"prosody": prosody_target, "ejabberd": ejabberd_target, "cluster": cluster_target}


# ------------------------------------------------------------------ workers


class WorkerHandle:
    """One reader worker process, driven by JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def spawn(cls) -> WorkerHandle:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.fanout_readers",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            limit=2**27,
        )  # fmt: skip
        return cls(process)

    async def call(self, command: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"reader worker {self.process.pid} exited")
        return cast(dict[str, Any], json.loads(line))

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"op": "close"}\n')
                await self.process.stdin.drain()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# ------------------------------------------------------------------ one run


@dataclass
class Row:
    server: str
    rate: float
    readers: int
    label: str = ""
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    deliveries_per_s: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    worst_reader_p99: float = 0.0
    server_cpu_us: float = 0.0
    server_cpu_pct: float = 0.0
    worker_cpu_pct: float = 0.0
    server_rss_mb: float = 0.0
    other_cpu_pct: float = 0.0
    closed: int = 0
    wait_limit_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _percentiles(hist: Counter[int], offered: int) -> tuple[float, float, float]:
    """p50, p99, max in ms over `offered` deliveries; those missing are infinitely late."""
    delivered = sum(hist.values())
    if offered <= 0:
        return float("nan"), float("nan"), float("nan")
    result = []
    for fraction in (0.5, 0.99):
        index = min(offered - 1, round(fraction * (offered - 1)))
        if index >= delivered:
            result.append(float("inf"))
            continue
        seen = 0
        for key in sorted(hist):
            seen += hist[key]
            if seen > index:
                result.append((key + 0.5) / BINS_PER_MS)
                break
    top = float("inf") if delivered < offered else (max(hist) + 1) / BINS_PER_MS
    return result[0], result[1], top


class Run:
    """One server, its bridge, its room, the workers and the readers added so far."""

    def __init__(self, target: Target, workers: list[WorkerHandle], udp_port: int) -> None:
        self.target = target
        self.workers = workers
        self.udp_port = udp_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.seq = 0
        self.readers = 0
        self.join_log: list[str] = []
        self.quiet_limit = 10.0
        self.trouble = False
        # The last cell measured, (row, first, last): counted again once its backlog is
        # gone, which tells late deliveries from ones that never arrive.
        self.last_cell: tuple[Row, int, int] | None = None

    async def send(self, count: int, rate: float) -> float:
        """`count` changes at `rate` per second; returns the seconds it took."""
        start = time.monotonic()
        for index in range(count):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.seq += 1
            change = dataclasses.replace(
                sample_change(WIKI, self.seq), comment=marker_comment(self.seq, time.monotonic())
            )
            self.sock.sendto(
                encode_datagram(change, DatagramFormat.MW_JSON), ("127.0.0.1", self.udp_port)
            )
        return time.monotonic() - start

    async def wait_all(self, target: int, timeout: float) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(
                    w.call({"op": "wait", "target": target, "timeout": timeout, "quiet": STALL})
                    for w in self.workers
                )
            )
        )

    async def add_readers(self, total: int, parallel: int = 20) -> None:
        if self.readers and self.seq:
            # The backlog of an overloaded cell first: messages the server has not read
            # from the bridge yet would be fanned out to the new readers too.
            waited = time.monotonic()
            settled = await self.wait_all(self.seq, timeout=180)
            reached = sum(w["reached"] for w in settled)
            if reached < self.readers:
                self.trouble = True
            log(f"  backlog: {reached} of {self.readers} readers up to date after "
                f"{time.monotonic() - waited:.1f} s")  # fmt: skip
            await self.recount()
        started = time.monotonic()
        cpu0, _ = group_usage(self.target.groups)
        batches: list[list[dict[str, Any]]] = [[] for _ in self.workers]
        for index in range(self.readers, total):
            host, port = self.target.endpoints[index % len(self.target.endpoints)]
            batches[index % len(self.workers)].append(
                dataclasses.asdict(
                    ReaderSpec(host=host, port=port, domain=self.target.reader_domain,
                               nick=f"r{index}")
                )
            )  # fmt: skip
        answers = await asyncio.gather(
            *(
                w.call({"op": "connect", "readers": batch, "room": self.target.room,
                        "ca_file": str(self.target.ca_file), "parallel": parallel,
                        "join_timeout": 20})
                for w, batch in zip(self.workers, batches, strict=True)
            )
        )  # fmt: skip
        failed = sum(a["failed"] for a in answers)
        retried = sum(a["retried"] for a in answers)
        connected = sum(a["connected"] for a in answers)
        cpu1, rss = group_usage(self.target.groups)
        seconds = time.monotonic() - started
        note = (
            f"{self.target.name}: {total - self.readers} readers connected and joined in "
            f"{seconds:.1f} s (server CPU {cpu1 - cpu0:.1f} s, RSS {rss:.0f} MB); "
            f"{connected} in the room, {failed} failed"
            + (f" ({retried} joined only at a second attempt)" if retried else "")
        )
        self.join_log.append(note)
        log(note)
        if failed or retried:
            self.trouble = True
        if retried:
            examples = [e for a in answers for e in a["retried_examples"]]
            log(f"  {retried} joins retried, e.g. {examples[:3]}")
        if failed:
            errors = [e for a in answers for e in a["errors"]]
            log(f"  {failed} readers could not join: {errors[:3]}")
        self.readers = connected

    async def recount(self) -> None:
        """Count the last cell's deliveries again (its backlog waited out): what is still
        missing never arrived."""
        if self.last_cell is None:
            return
        row, first, last = self.last_cell
        self.last_cell = None
        if not row.lost:
            row.extra["never"] = 0
            return
        reports = await asyncio.gather(
            *(w.call({"op": "report", "first": first, "last": last}) for w in self.workers)
        )
        arrived = sum(sum(r["histogram"].values()) for r in reports)
        row.extra["never"] = row.sent * row.readers - arrived
        log(f"  {row.server} {row.rate:g}/s x {row.readers}: {row.extra['never']:,} deliveries "
            "never arrived")  # fmt: skip

    async def quiet(self, limit: float, threshold: float = 30.0) -> None:
        """Wait (at most `limit` s) for a second in which other processes of the machine used
        under `threshold` % of a core: the machine is shared, and its other jobs are noise."""
        deadline = time.monotonic() + limit
        while True:
            server0, _ = group_usage(self.target.groups)
            ours0, _ = group_usage([os.getpgrp()])
            busy0 = machine_busy_seconds()
            await asyncio.sleep(1)
            server1, _ = group_usage(self.target.groups)
            ours1, _ = group_usage([os.getpgrp()])
            others = machine_busy_seconds() - busy0 - (server1 - server0) - (ours1 - ours0)
            if others * 100 < threshold or time.monotonic() > deadline:
                if others * 100 >= threshold:
                    log(f"  (other processes still at {others * 100:.0f} % of a core)")
                return

    async def cell(self, rate: float, seconds: float, drain: float, label: str = "") -> Row:
        # Warm-up: every reader must get it, which also waits out an earlier backlog.
        await self.quiet(self.quiet_limit)
        await self.send(3, 20)
        warm = await self.wait_all(self.seq, timeout=60)
        if sum(w["reached"] for w in warm) < self.readers:
            self.trouble = True
            log(f"  warm-up: only {sum(w['reached'] for w in warm)} of {self.readers} readers")
        await self.recount()
        first = self.seq + 1
        await asyncio.gather(*(w.call({"op": "track", "first": first}) for w in self.workers))
        cpu0, _ = group_usage(self.target.groups)
        ours0, _ = group_usage([os.getpgrp()])
        busy0 = machine_busy_seconds()
        start = time.monotonic()
        count = max(1, round(rate * seconds))
        took = await self.send(count, rate)
        last = self.seq
        await self.wait_all(last, timeout=drain)
        cpu1, rss = group_usage(self.target.groups)
        ours1, _ = group_usage([os.getpgrp()])
        busy1 = machine_busy_seconds()
        wall = time.monotonic() - start
        # What the rest of the machine used meanwhile (other jobs: the noise).
        others = (busy1 - busy0) - (cpu1 - cpu0) - (ours1 - ours0)
        reports = await asyncio.gather(
            *(
                w.call(
                    {"op": "report", "first": first, "last": last, "bucket": max(1, round(rate))}
                )
                for w in self.workers
            )
        )
        series = [max(values) for values in zip(*(r["series"] for r in reports), strict=True)]
        hist: Counter[int] = Counter()
        per_reader: list[dict[str, Any]] = []
        for report in reports:
            hist.update({int(k): v for k, v in report["histogram"].items()})
            per_reader.extend(report["per_reader"])
        offered = count * self.readers
        delivered = sum(hist.values())
        # Where the lost deliveries were: per server address (the cluster's two nodes).
        lost_by_host: Counter[str] = Counter()
        short_readers: Counter[str] = Counter()
        for r in per_reader:
            if r["count"] < count:
                lost_by_host[r["host"]] += count - r["count"]
                short_readers[r["host"] + (" closed" if r["closed"] else "")] += 1
        last_receive = max(r["last_receive"] for r in reports)
        p50, p99, top = _percentiles(hist, offered)
        if top != float("inf"):  # the exact worst, not its histogram bin
            top = max((r["max"] for r in per_reader), default=top)
        worst = max(
            (r["p99"] if r["count"] == count else float("inf") for r in per_reader), default=0.0
        )
        row = Row(
            server=self.target.name, rate=rate, readers=self.readers, label=label, sent=count,
            delivered=delivered, lost=offered - delivered,
            deliveries_per_s=delivered / max(1e-9, last_receive - start) if delivered else 0.0,
            p50=p50, p99=p99, max=top, worst_reader_p99=worst,
            server_cpu_us=(cpu1 - cpu0) / max(1, delivered) * 1e6,
            server_cpu_pct=(cpu1 - cpu0) / wall * 100,
            worker_cpu_pct=max(r["cpu"] / max(1e-9, r["wall"]) * 100 for r in reports),
            server_rss_mb=rss, closed=sum(r["closed"] for r in reports),
            other_cpu_pct=max(0.0, others / wall * 100),
            wait_limit_ms=(seconds + drain) * 1000,
            extra={"send_seconds": took, "series": series, "lost_by_host": dict(lost_by_host),
                   "short_readers": dict(short_readers)},
        )  # fmt: skip
        self.last_cell = (row, first, last)
        log(
            f"  {row.server} {rate:g}/s x {self.readers} readers{' ' + label if label else ''}: "
            f"{row.delivered}/{offered} delivered, {row.deliveries_per_s:,.0f}/s, "
            f"p50 {fmt_ms(p50, row)} p99 {fmt_ms(p99, row)} max {fmt_ms(top, row)} ms, "
            f"server {row.server_cpu_us:.0f} us/delivery ({row.server_cpu_pct:.0f} %), "
            f"workers <= {row.worker_cpu_pct:.0f} %, other processes {row.other_cpu_pct:.0f} %, "
            f"sent in {took:.1f} s"
            + (f"; worst latency per second: {', '.join(f'{v:.0f}' for v in series)} ms"
               if label else "")
            + (f"; lost by server address: {dict(lost_by_host)} "
               f"(readers short: {dict(short_readers)})" if lost_by_host else "")
        )  # fmt: skip
        return row

    async def slow_reader_cells(
        self,
        rate: float,
        seconds: float,
        slow_seconds: float,
        drain: float,
        without: Row | None = None,
    ) -> tuple[Row, Row, dict[str, Any]]:
        """`without`: the cell just measured at this rate, if there is one (else one is)."""
        if without is None:
            without = await self.cell(rate, seconds, drain, label="without the slow reader")
        else:
            without = dataclasses.replace(without, label="without the slow reader")
        host, port = self.target.endpoints[-1]
        for attempt in range(3):  # a join through the cluster's node 2 may go unanswered
            slow = LeanReader(ReaderSpec(host=host, port=port, domain=self.target.reader_domain,
                                         nick=f"slow{attempt}"))  # fmt: skip
            try:
                await slow.open(ssl_context(str(self.target.ca_file)), receive_buffer=SLOW_BUFFER)
                await slow.join(self.target.room, timeout=20)
                break
            except XmppError as error:
                slow.close()
                self.join_log.append(f"{self.target.name}: the slow reader's join: {error!s:.100}")
                if attempt == 2:
                    raise
        assert slow.transport is not None
        # The TLS layer's own read buffer (asyncio's SSL transport has the setter).
        slow.transport.set_read_buffer_limits(high=SLOW_BUFFER)  # type: ignore[attr-defined]
        slow.transport.pause_reading()
        paused = time.monotonic()
        sockname = slow.transport.get_extra_info("sockname")
        peername = slow.transport.get_extra_info("peername")
        _, rss_before = group_usage(self.target.groups)
        samples: list[tuple[float, str, int, float]] = []
        stop, gone = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                entry = tcp_entry((peername[0], peername[1]), (sockname[0], sockname[1]))
                _, rss = group_usage(self.target.groups)
                state = TCP_STATES.get(entry[0], entry[0]) if entry else "gone"
                samples.append((time.monotonic() - paused, state, entry[1] if entry else 0, rss))
                if state != "ESTABLISHED":
                    gone.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)

        watcher = asyncio.create_task(watch())
        try:
            with_slow = await self.cell(rate, slow_seconds, drain, label="with one slow reader")
            stream_end = time.monotonic() - paused
            # After the stream: does the server let go of it later (Prosody's send_timeout)?
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), self.target.slow_linger)
        finally:
            stop.set()
            await watcher
        received_before = slow.received
        slow.transport.resume_reading()
        resume_deadline = time.monotonic() + 10
        quiet_since, seen = time.monotonic(), slow.bytes_received
        while time.monotonic() < resume_deadline and not slow.closed:
            await asyncio.sleep(0.1)
            if slow.bytes_received != seen:
                quiet_since, seen = time.monotonic(), slow.bytes_received
            elif time.monotonic() - quiet_since > 2:
                break
        still_open = not slow.closed
        slow.close()
        established = [s for s in samples if s[1] == "ESTABLISHED"]
        left = next((s for s in samples if s[1] != "ESTABLISHED"), None)
        fate = {
            "send_queue_max": max((s[2] for s in samples), default=0),
            "queue_full_after": next(
                (s[0] for s in established if s[2] >= 0.9 * max(x[2] for x in established)), None
            )
            if established
            else None,
            "server_closed_after": left[0] if left else None,
            "server_state": left[1] if left else "ESTABLISHED",
            "stream_seconds": stream_end,
            "server_rss_growth_mb": max((s[3] for s in samples), default=rss_before) - rss_before,
            "slow_received_before_resume": received_before,
            "slow_received_total": slow.received,
            "slow_sent": with_slow.sent + 3,  # and the warm-up
            "stream_error": slow.stream_error,
            "timeline": timeline(samples),
            "still_open_after_resume": still_open,
        }
        return without, with_slow, fate


def timeline(samples: list[tuple[float, str, int, float]], step: float = 5.0) -> str:
    """The slow reader's server-side socket every `step` seconds: send queue, server RSS."""
    points, due = [], 0.0
    for t, state, queue, rss in samples:
        if t >= due:
            points.append(f"{t:.0f} s: {queue / 1024:,.0f} KiB {rss:.0f} MB" +
                          ("" if state == "ESTABLISHED" else f" {state}"))  # fmt: skip
            due = t + step
    return "; ".join(points)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fmt_ms(value: float, row: Row) -> str:
    if value == float("inf"):
        return f">{row.wait_limit_ms:,.0f}"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


@contextlib.contextmanager
def fanout_bridge(server: Any, workdir: Path, udp_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """udp2xmpp as its own process, as benchmarks.common.bridge_process, default [delivery],
    but a self-ping may wait 120 s for its answer (default 20): an overloaded server answers
    late, and the benchmark measures the server, not the bridge's reconnections."""
    config = workdir / "bridge.toml"
    config.write_text(
        f"""[xmpp]
jid = "rcbot@{server.domain}"
password = "bridgepass"
host = "{server.host}"
port = {server.c2s_port}
ca_file = "{server.ca_file}"
ping_timeout = 120
[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{server.muc_domain}"
wikis = ["{WIKI}"]
"""
    )
    with (workdir / "bridge.log").open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "udp2xmpp"), "--config", str(config), "--log-level", "warning"],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def running(target: Target, workers: int, quiet_limit: float) -> AsyncIterator[Run]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_udp_port()
        bridge_server = target.bridge_server
        with fanout_bridge(bridge_server, Path(tmp), port):
            await wait_room(target)
            handles = [await WorkerHandle.spawn() for _ in range(workers)]
            run = Run(target, handles, port)
            run.quiet_limit = quiet_limit
            try:
                yield run
            finally:
                run.sock.close()
                bridge_log = Path(tmp) / "bridge.log"
                lines = bridge_log.read_text(errors="replace").splitlines()
                reconnects = sum("reconnecting" in line for line in lines)
                set_aside = sum("set aside" in line for line in lines)
                if reconnects or set_aside:
                    run.join_log.append(
                        f"{target.name}: the bridge reconnected {reconnects} times and set "
                        f"aside {set_aside} changes (its log: {len(lines)} warnings)"
                    )
                if run.trouble and lines:
                    log("  bridge log (tail):\n    " + "\n    ".join(lines[-15:]))
                await asyncio.gather(*(h.close() for h in handles))


async def wait_room(target: Target, limit: float = 60.0) -> None:
    """Until the bridge has created and configured the room, through the first endpoint
    (on the cluster: node 1, before any reader joins, so the room is not split)."""
    host, port = target.endpoints[0]
    probe = LeanReader(ReaderSpec(host=host, port=port, domain=target.reader_domain, nick="probe"))
    await probe.open(ssl_context(str(target.ca_file)))
    deadline = time.monotonic() + limit
    try:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            answer = await probe.query(
                f"<iq type='get' to='{target.room}' id='disco{n}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            )
            if b"muc_moderated" in answer:
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"{target.room} was not created and moderated within {limit:.0f} s")
    finally:
        probe.close()


# ------------------------------------------------------------------ report


def table(rows: list[Row]) -> str:
    lines = [
        "| server | rate /s | readers | deliveries/s | p50 ms | p99 ms | max ms "
        "| worst reader p99 ms | server CPU us/delivery | server CPU % | worker CPU % (max) "
        "| other processes CPU % | not delivered in time (never) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        never = r.extra.get("never")
        lost = (
            f"{r.lost:,} of {r.sent * r.readers:,}"
            + (f" ({never:,})" if r.lost and never is not None else "")
            + (f", {r.closed} readers closed" if r.closed else "")
        )
        by_host = r.extra.get("lost_by_host", {})
        if r.server == "cluster" and r.lost and by_host:
            lost += "; by node: " + ", ".join(f"{h} {n:,}" for h, n in sorted(by_host.items()))
        lines.append(
            f"| {r.server}{' ' + r.label if r.label else ''} | {r.rate:g} | {r.readers:,} "
            f"| {r.deliveries_per_s:,.0f} | {fmt_ms(r.p50, r)} | {fmt_ms(r.p99, r)} "
            f"| {fmt_ms(r.max, r)} | {fmt_ms(r.worst_reader_p99, r)} | {r.server_cpu_us:.0f} "
            f"| {r.server_cpu_pct:.0f} | {r.worker_cpu_pct:.0f} | {r.other_cpu_pct:.0f} | {lost} |"
        )
    return "\n".join(lines)


def threshold(rows: list[Row], servers: list[str]) -> list[str]:
    out = []
    for server in servers:
        cells = sorted((r for r in rows if r.server == server), key=lambda r: (r.readers, r.rate))
        if not cells:
            continue
        over = [r for r in cells if r.p99 > 1000]
        if over:
            first = min(r.readers for r in over)
            rates = ", ".join(f"{r.rate:g}/s" for r in over if r.readers == first)
            out.append(f"- {server}: p99 > 1 s first at {first:,} readers ({rates})")
        else:
            out.append(
                f"- {server}: p99 stays under 1 s up to {max(r.readers for r in cells):,} readers "
                f"(rates {', '.join(sorted({f'{r.rate:g}/s' for r in cells}))})"
            )
    return out


def fate_text(server: str, fate: dict[str, Any], settings: str) -> str:
    closed = fate["server_closed_after"]
    when = (
        f"closed by the server {closed:.1f} s after it stopped reading (the stream lasted "
        f"until {fate['stream_seconds']:.1f} s; socket then {fate['server_state']})"
        if closed is not None
        else f"never closed by the server (watched until {fate['stream_seconds']:.1f} s + linger)"
    )
    full = fate["queue_full_after"]
    return (
        f"- {server} ({settings}): server-side send queue up to {fate['send_queue_max']:,} B"
        + (f" (full after {full:.1f} s)" if full is not None else "")
        + f"; {when}; server RSS +{fate['server_rss_growth_mb']:.1f} MB meanwhile; the slow reader "
        f"had {fate['slow_received_before_resume']} changes before it read again, "
        f"{fate['slow_received_total']} in all of {fate['slow_sent']} sent while it was slow"
        + (f"; then: {fate['stream_error'][:160]!r}" if fate["stream_error"] else "")
        + f" (send queue, server RSS: {fate['timeline']})"
        + (
            "; its connection still open after reading again"
            if fate["still_open_after_resume"]
            else "; then EOF"
        )
    )


# ------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    servers = [s for s in args.servers.split(",") if s]
    rates = sorted(float(r) for r in args.rates.split(",") if r)
    readers = sorted(int(n) for n in args.readers.split(",") if n)
    steps = sorted(set(readers) | ({args.slow_readers} if args.slow else set()))
    started = datetime.now(UTC)
    command = "python -m benchmarks.fanout " + " ".join(sys.argv[1:])
    rows: list[Row] = []
    slow_rows: list[Row] = []
    fates: list[str] = []
    notes: list[str] = []
    for name in servers:
        try:
            with TARGETS[name](args) as target:
                log(f"# {target.description}")
                async with running(target, args.workers, args.quiet) as run:
                    try:
                        for step in steps:
                            await run.add_readers(step, parallel=args.parallel)
                            if step in readers:
                                for rate in rates:
                                    rows.append(await run.cell(rate, args.seconds, args.drain))
                            if args.slow and step == args.slow_readers:
                                last = rows[-1] if rows else None
                                adjacent = (
                                    last
                                    if last is not None and last.server == name
                                    and (last.readers, last.rate) == (step, args.slow_rate)
                                    else None
                                )  # fmt: skip
                                without, with_slow, fate = await run.slow_reader_cells(
                                    args.slow_rate, args.seconds, args.slow_seconds,
                                    args.drain, without=adjacent,
                                )  # fmt: skip
                                slow_rows += [without, with_slow]
                                fates.append(fate_text(name, fate, target.settings))
                    finally:
                        notes += run.join_log
        except Exception as error:  # one server failing must not hide the others' figures
            log(f"{name}: stopped by {error!r}")
            notes.append(f"{name}: the run stopped early: {error!s:.300}")
    finished = datetime.now(UTC)
    print(f"# Fan-out: one room, the bridge publishing, N readers ({started:%Y-%m-%d %H:%M} UTC)\n")
    print(f"Command: `{command.strip()}` ({(finished - started).total_seconds() / 60:.1f} min), "
          f"{os.cpu_count()} cores, loopback, STARTTLS, {args.workers} reader processes, "
          f"{args.seconds:g} s of stream per cell, {args.drain:g} s to drain.\n")  # fmt: skip
    print(table(rows))
    print("\nWhere p99 passes one second:\n")
    print("\n".join(threshold(rows, servers)))
    if slow_rows:
        print(f"\nOne reader that stops reading (at {args.slow_readers} readers, "
              f"{args.slow_rate:g}/s; figures are the other readers'):\n")  # fmt: skip
        print(table(slow_rows))
        print()
        print("\n".join(fates))
    print("\nJoins and incidents:\n")
    print("\n".join(f"- {n}" for n in notes))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="prosody,ejabberd,cluster")
    parser.add_argument("--rates", default="30,300")
    parser.add_argument("--readers", default="10,100,1000")
    parser.add_argument("--seconds", type=float, default=10.0, help="stream per cell")
    parser.add_argument("--drain", type=float, default=10.0, help="wait for the last change")
    parser.add_argument("--workers", type=int, default=3, help="reader processes")
    parser.add_argument("--parallel", type=int, default=20, help="joins at once per worker")
    parser.add_argument("--slow-readers", type=int, default=10)
    parser.add_argument("--slow-rate", type=float, default=300.0)
    parser.add_argument("--slow-seconds", type=float, default=30.0)
    parser.add_argument("--no-slow", dest="slow", action="store_false")
    parser.add_argument(
        "--visitor-presence", action="store_true",
        help="broadcast the readers' (visitors') presence, as the servers do by default: "
        "every join then costs a presence to every occupant",
    )  # fmt: skip
    parser.add_argument(
        "--quiet", type=float, default=10.0,
        help="before a cell, wait at most this long for other processes to calm down",
    )  # fmt: skip
    parser.add_argument(
        "--prosody-send-timeout", type=float, default=5.0,
        help="Prosody's network_settings.send_timeout (0: its default, 180 s)",
    )  # fmt: skip
    parser.add_argument(
        "--ejabberd-send-timeout", type=float, default=15.0,
        help="a send_timeout for ejabberd's sockets, seconds, set in the VM (0: none, as 23.01)",
    )  # fmt: skip
    parser.add_argument(
        "--ejabberd-dist-buffer", type=int, default=0,
        help="the Erlang distribution buffer busy limit in KB (+zdbbl; 0: 1,024, the default)",
    )  # fmt: skip
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
