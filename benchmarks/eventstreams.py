"""EventStreams source benchmark: events/s and bridge CPU per event, beside the UDP path.

    .venv/bin/python -m benchmarks.eventstreams [--events 5000]

One bridge process (udp2xmpp, its own CPU) with both sources, a real Prosody and a
reader in the room. First N changes as UDP datagrams (the baseline), then N as
EventStreams events from the local KafkaSSE-speaking server (harness.eventstreams),
with a forced close every 1,000 events as Wikimedia does every 15 minutes.
Pacing is off ([delivery] limits 0) so the figures are the path's, not the pacer's.
Then the source alone, in this process: the feed reading N events into a no-op
intake (parse, decode, dedupe; the local server's sending is in the same process).
Figures are compared within this run only: the machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import slixmpp

from benchmarks.bridge import free_udp_port, send_udp, wait_room
from benchmarks.common import (
    BIN,
    Reader,
    client,
    connect,
    join_reader,
    process_cpu_seconds,
    process_rss_mb,
    prosody_server,
    sample_change,
)
from harness.eventstreams import EventStreamsServer
from harness.prosody import ProsodyServer
from udp2xmpp.config import parse_config
from udp2xmpp.source.eventstreams import EventStreamsFeed
from xmlrc.wire import RecentChange
from xmlrc.wire.jsonfeed import change_to_json

WIKI = "benchwiki"


def es_events(first: int, count: int) -> list[dict[str, object]]:
    return [change_to_json(sample_change(WIKI, rcid)) for rcid in range(first, first + count)]


def write_config(server: ProsodyServer, workdir: Path, udp_port: int, url: str) -> Path:
    config = workdir / "bridge.toml"
    config.write_text(
        f"""[xmpp]
jid = "rcbot@{server.domain}"
password = "bridgepass"
host = "{server.host}"
port = {server.c2s_port}
ca_file = "{server.ca_file}"
[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{server.muc_domain}"
wikis = ["{WIKI}"]
[delivery]
max_stanzas_per_second = 0
max_bytes_per_second = 0
[eventstreams]
url = "{url}"
since = "0"
state_file = "{workdir / "eventstreams.state"}"
stall_seconds = 30.0
"""
    )
    return config


async def through_bridge(server: ProsodyServer, workdir: Path, events: int) -> dict[str, float]:
    stream = EventStreamsServer(close_after_events=1000)
    await stream.start()
    port = free_udp_port()
    config = write_config(server, workdir, port, stream.url())
    log = workdir / "bridge.log"
    room = f"{WIKI}@{server.muc_domain}"
    out: dict[str, float] = {}
    process = start_bridge(config, log)
    try:
        reader_xmpp, reader = await join_reader_when_ready(server, room)
        try:
            await asyncio.sleep(1.0)  # let the bridge settle (its start-up CPU is not counted)
            cpu0, t0 = process_cpu_seconds(process.pid), time.perf_counter()
            await send_udp(port, events, None, first=1, wiki=WIKI)
            await reader.wait_for(events)
            cpu1, t1 = process_cpu_seconds(process.pid), time.perf_counter()
            out["udp_delivered"] = len(reader.received)
            out["udp_rate"] = len(reader.received) / (t1 - t0)
            out["udp_cpu_us"] = (cpu1 - cpu0) / max(1, len(reader.received)) * 1e6
            stream.publish(es_events(events + 1, events))
            t2 = time.perf_counter()
            await reader.wait_for(2 * events)
            cpu2, t3 = process_cpu_seconds(process.pid), time.perf_counter()
            got = len(reader.received) - int(out["udp_delivered"])
            out["es_delivered"] = got
            out["es_rate"] = got / (t3 - t2)
            out["es_cpu_us"] = (cpu2 - cpu1) / max(1, got) * 1e6
            out["duplicates"] = reader.duplicates
            out["closes"] = stream.closes
            out["rss_mb"] = process_rss_mb(process.pid)
        finally:
            reader_xmpp.disconnect()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        await stream.stop()
    return out


def start_bridge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """udp2xmpp as its own process, so its CPU time is its own."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [str(BIN / "udp2xmpp"), "--config", str(config), "--log-level", "warning"],
            stdout=sink,
            stderr=sink,
        )


async def join_reader_when_ready(
    server: ProsodyServer, room: str
) -> tuple[slixmpp.ClientXMPP, Reader]:
    """The reader joins once the bridge has created the room (so it does not create it)."""
    probe = client(server, "direct", "directpass")
    await connect(probe, server)
    try:
        await wait_room(probe, room)
    finally:
        probe.disconnect()
    return await join_reader(server, room)


async def source_alone(events: int) -> dict[str, float]:
    stream = EventStreamsServer(es_events(1, events), close_after_events=1000)
    await stream.start()
    data = {
        "xmpp": {"jid": "rcbot@localhost", "password": "x"},
        "rooms": {"service": "conference.localhost"},
        "eventstreams": {"url": stream.url(), "since": "0"},
    }
    settings = parse_config(data).eventstreams
    assert settings is not None
    feed = EventStreamsFeed(settings)
    got = 0
    done = asyncio.Event()

    def accept(change: RecentChange, origin: str) -> bool:
        nonlocal got
        got += 1
        if got >= events:
            done.set()
        return True

    cpu0, t0 = time.process_time(), time.perf_counter()
    await feed.start(accept)
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        cpu1, t1 = time.process_time(), time.perf_counter()
        await feed.stop()
        await stream.stop()
    return {"delivered": got, "rate": got / (t1 - t0), "cpu_us": (cpu1 - cpu0) / max(1, got) * 1e6}


async def main(events: int) -> None:
    print(f"EventStreams benchmark, {events} changes per path (loopback, real Prosody)")
    with prosody_server() as server, tempfile.TemporaryDirectory() as tmp:
        result = await through_bridge(server, Path(tmp), events)
    print(
        f"  UDP (baseline):  {result['udp_delivered']:.0f} delivered, "
        f"{result['udp_rate']:,.0f} changes/s, bridge CPU {result['udp_cpu_us']:.0f} us/change"
    )
    print(
        f"  EventStreams:    {result['es_delivered']:.0f} delivered, "
        f"{result['es_rate']:,.0f} changes/s, bridge CPU {result['es_cpu_us']:.0f} us/change "
        f"({result['closes']:.0f} forced closes, {result['duplicates']:.0f} duplicates)"
    )
    print(
        f"  ratio EventStreams/UDP: rate {result['es_rate'] / result['udp_rate']:.2f}x, "
        f"CPU per change {result['es_cpu_us'] / result['udp_cpu_us']:.2f}x; "
        f"bridge RSS {result['rss_mb']:.0f} MB"
    )
    alone = await source_alone(events)
    print(
        f"  source alone (feed + local server, one process): {alone['rate']:,.0f} events/s, "
        f"{alone['cpu_us']:.0f} us CPU/event ({alone['delivered']:.0f} read)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    asyncio.run(main(parser.parse_args().events))
