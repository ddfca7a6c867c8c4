"""Shared parts of the benchmarks: a throwaway Prosody, a reader, process figures.

Everything runs on loopback; every process started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import slixmpp

from harness.prosody import ProsodyServer
from xmlrc.wire import RecentChange

BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@contextmanager
def prosody_server() -> Iterator[ProsodyServer]:
    server = ProsodyServer(muc_log_storage="memory")
    try:
        for user, password in (
            ("rcbot", "bridgepass"),
            ("reader", "readerpass"),
            ("direct", "directpass"),
        ):
            server.add_user(user, password)
        server.start()
        yield server
    finally:
        server.cleanup()


def sample_change(wiki: str, rcid: int) -> RecentChange:
    """A typical edit: a realistic title and comment length (Wikimedia's median is ~40)."""
    return RecentChange(
        wiki=wiki, type="edit", ns=0, title=f"Benchmark page {rcid % 997}", user="Alice",
        comment="copyedit: fix a typo in the second paragraph (via benchmark)",
        timestamp=datetime.now(UTC).replace(microsecond=0), rcid=rcid, revid=rcid + 10_000,
        old_revid=rcid + 9_999, oldlen=2_000, newlen=2_013, patrolled=True,
        server_url="https://bench.example.org", server_name="bench.example.org",
        server_script_path="/w",
    )  # fmt: skip


def client(server: ProsodyServer, user: str, password: str) -> slixmpp.ClientXMPP:
    xmpp = slixmpp.ClientXMPP(server.jid(user), password)
    xmpp.register_plugin("xep_0045")
    xmpp.enable_direct_tls = False
    xmpp.ca_certs = server.ca_file
    return xmpp


async def connect(xmpp: slixmpp.ClientXMPP, server: ProsodyServer) -> None:
    started = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: started.set())
    xmpp.connect(server.host, server.c2s_port)
    await asyncio.wait_for(started.wait(), 30)
    xmpp.send_presence()


@dataclass
class Reader:
    """Counts messages arriving in a room, by their id, with the time of receipt."""

    received: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0

    def on_message(self, msg: slixmpp.Message) -> None:
        if msg["type"] != "groupchat":
            return
        now = time.perf_counter()
        # One <rc> per change (several when the bridge batches them into one message).
        for rc in msg.xml.iter("{urn:xmlrc:rc:1}rc"):
            key = f"{rc.get('wikiid')}/{rc.get('rcid')}"
            if key in self.received:
                self.duplicates += 1
            else:
                self.received[key] = now

    async def wait_for(self, count: int, quiet: float = 3.0, limit: float = 300.0) -> None:
        """Until `count` arrived, or nothing new for `quiet` seconds, or `limit` passed."""
        deadline = time.monotonic() + limit
        last, last_change = len(self.received), time.monotonic()
        while len(self.received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if len(self.received) != last:
                last, last_change = len(self.received), time.monotonic()
            elif time.monotonic() - last_change > quiet:
                break

    def rate(self) -> float:
        times = sorted(self.received.values())
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])


async def join_reader(server: ProsodyServer, room: str) -> tuple[slixmpp.ClientXMPP, Reader]:
    xmpp = client(server, "reader", "readerpass")
    reader = Reader()
    xmpp.add_event_handler("groupchat_message", reader.on_message)
    await connect(xmpp, server)
    await xmpp.plugin["xep_0045"].join_muc_wait(slixmpp.JID(room), "reader", maxstanzas=0)
    return xmpp, reader


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc, like getrusage)."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / CLOCK_TICKS


def process_rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 2**20


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def summary(values_ms: list[float]) -> str:
    if not values_ms:
        return "no samples"
    return (
        f"p50 {percentile(values_ms, 0.5):.1f} ms, p99 {percentile(values_ms, 0.99):.1f} ms, "
        f"max {max(values_ms):.1f} ms (mean {statistics.fmean(values_ms):.1f})"
    )


@contextmanager
def bridge_process(
    server: ProsodyServer,
    workdir: Path,
    udp_port: int,
    wiki: str,
    component: bool = False,
    **delivery: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """udp2xmpp as its own process (so its CPU time is its own), joined to `wiki`'s room.

    `component`: connect as an XEP-0114 component (no TLS, no c2s) instead.
    """
    extra = "".join(f"{key} = {value}\n" for key, value in delivery.items())
    config = workdir / "bridge.toml"
    if component:
        xmpp = (
            f'jid = "{server.component_domain}"\npassword = "{server.component_secret}"\n'
            f'mode = "component"\nhost = "{server.host}"\nport = {server.component_port}\n'
        )
    else:
        xmpp = (
            f'jid = "rcbot@{server.domain}"\npassword = "bridgepass"\nhost = "{server.host}"\n'
            f'port = {server.c2s_port}\nca_file = "{server.ca_file}"\n'
        )
    config.write_text(
        f"""[xmpp]
{xmpp}[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{server.muc_domain}"
wikis = ["{wiki}"]
[delivery]
{extra}"""
    )
    log = workdir / "bridge.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "udp2xmpp"), "--config", str(config), "--log-level", "warning"],
            stdout=out,
            stderr=out,
        )
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
