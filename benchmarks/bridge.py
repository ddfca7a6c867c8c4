"""Bridge benchmarks against a real Prosody: throughput, latency, burst.

    .venv/bin/python -m benchmarks.bridge [--events 10000] [--only throughput|latency|burst]

Every figure is printed beside the baseline measured in the same run: a plain
slixmpp client publishing straight into the same server and room type (the
physical limit of the one-message-per-change path). Machines here are noisy;
compare figures within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from benchmarks.common import (
    bridge_process,
    client,
    connect,
    join_reader,
    process_cpu_seconds,
    process_rss_mb,
    prosody_server,
    sample_change,
    summary,
)
from harness.prosody import ProsodyServer
from udp2xmpp.sink.stanza import build_message
from xmlrc.wire import DatagramFormat, encode_datagram


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_room(xmpp: slixmpp.ClientXMPP, room: str, limit: float = 30.0) -> None:
    """Until the bridge has created `room` (so the reader does not create it)."""
    xmpp.register_plugin("xep_0030")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            await xmpp.plugin["xep_0030"].get_info(jid=room, timeout=5)
            return
        except (IqError, IqTimeout):
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{room} was not created within {limit:.0f} s")


async def direct_publisher(
    server: ProsodyServer, events: int, per_second: float | None = None, room_name: str = "direct"
) -> dict[str, float]:
    """Baseline: one slixmpp client publishes `events` messages straight into a room
    (as fast as it can, or paced at `per_second`, then with send-to-receipt latencies)."""
    room = f"{room_name}@{server.muc_domain}"
    publisher = client(server, "direct", "directpass")
    await connect(publisher, server)
    await publisher.plugin["xep_0045"].join_muc_wait(slixmpp.JID(room), "pub", maxstanzas=0)
    reader_xmpp, reader = await join_reader(server, room)
    sent_at: dict[str, float] = {}
    try:
        start = time.perf_counter()
        for rcid in range(1, events + 1):
            if per_second:
                delay = start + (rcid - 1) / per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            element = build_message(sample_change(room_name, rcid), room)
            sent_at[f"{room_name}/{rcid}"] = time.perf_counter()
            publisher.send(slixmpp.Message(publisher, xml=element))
            if not per_second and rcid % 100 == 0:
                await asyncio.sleep(0)  # let slixmpp write; an unpaced flood only queues up
        await reader.wait_for(events)
        elapsed = time.perf_counter() - start
        latencies = [(reader.received[k] - t) * 1000 for k, t in sent_at.items()
                     if k in reader.received]  # fmt: skip
        return {"delivered": len(reader.received), "rate": reader.rate(), "elapsed": elapsed,
                "latencies": latencies}  # type: ignore[dict-item]  # fmt: skip
    finally:
        publisher.disconnect()
        reader_xmpp.disconnect()


async def send_udp(
    port: int,
    events: int,
    per_second: float | None,
    first: int = 1,
    wiki: str = "benchwiki",
    sent_at: dict[str, float] | None = None,
) -> float:
    """Send datagrams (paced, or as fast as possible); returns the seconds it took."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.perf_counter()
    try:
        for index, rcid in enumerate(range(first, first + events)):
            data = encode_datagram(sample_change(wiki, rcid), DatagramFormat.MW_JSON)
            if per_second:
                due = start + index / per_second
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if sent_at is not None:
                sent_at[f"{wiki}/{rcid}"] = time.perf_counter()
            sock.sendto(data, ("127.0.0.1", port))
    finally:
        sock.close()
    return time.perf_counter() - start


async def through_bridge(
    server: ProsodyServer,
    workdir: Path,
    events: int,
    per_second: float | None,
    label: str,
    component: bool = False,
    changes_per_stanza: int = 1,
) -> dict[str, float]:
    """Events through udp2xmpp (a separate process) to a reader; the bridge's CPU and RSS."""
    port = free_udp_port()
    room = f"benchwiki@{server.muc_domain}"
    with bridge_process(
        server, workdir, port, "benchwiki", component=component,
        max_stanzas_per_second=0, max_bytes_per_second=0, changes_per_stanza=changes_per_stanza,
    ) as bridge:  # fmt: skip
        reader_xmpp, reader = None, None
        probe = client(server, "reader", "readerpass")
        await connect(probe, server)
        try:
            await wait_room(probe, room)
        finally:
            probe.disconnect()
        reader_xmpp, reader = await join_reader(server, room)
        try:
            await send_udp(port, 20, None, first=10_000_000)  # warm-up, not counted
            await reader.wait_for(20, quiet=2)
            reader.received.clear()
            cpu0, rss0 = process_cpu_seconds(bridge.pid), process_rss_mb(bridge.pid)
            sent_at: dict[str, float] = {}
            await send_udp(port, events, per_second, sent_at=sent_at)
            await reader.wait_for(events)
            cpu = process_cpu_seconds(bridge.pid) - cpu0
            latencies = [
                (reader.received[key] - sent) * 1000
                for key, sent in sent_at.items() if key in reader.received
            ]  # fmt: skip
            return {
                "label": label,  # type: ignore[dict-item]
                "delivered": len(reader.received),
                "lost": events - len(reader.received),
                "duplicates": reader.duplicates,
                "rate": reader.rate(),
                "cpu_us_per_event": cpu / max(1, len(reader.received)) * 1e6,
                "rss_start_mb": rss0,
                "rss_end_mb": process_rss_mb(bridge.pid),
                "latencies": latencies,  # type: ignore[dict-item]
            }
        finally:
            reader_xmpp.disconnect()


def report(result: dict[str, object]) -> None:
    lat = result.get("latencies")
    print(
        f"  {result['label']}: delivered {result['delivered']}, lost {result['lost']}, "
        f"dup {result['duplicates']}, {result['rate']:.0f} events/s at the reader; "
        f"bridge CPU {result['cpu_us_per_event']:.0f} us/event, "
        f"RSS {result['rss_start_mb']:.0f} -> {result['rss_end_mb']:.0f} MB"
    )
    if isinstance(lat, list) and lat:
        print(f"    latency UDP send -> reader: {summary(lat)}")


async def main(events: int, only: str | None) -> None:
    with prosody_server() as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(
            f"# Prosody 0.12 on loopback, STARTTLS, MUC archiving on (memory store); "
            f"{events} events per run"
        )
        baseline = await direct_publisher(server, events)
        print(
            f"baseline, direct slixmpp publisher: {baseline['delivered']:.0f} delivered, "
            f"{baseline['rate']:.0f} events/s at the reader"
        )
        if only in (None, "throughput"):
            result = await through_bridge(server, workdir, events, None, "throughput (max)")
            report(result)
            print(f"    ratio to the direct publisher: {result['rate'] / baseline['rate']:.2f}")
        if only in (None, "component"):
            result = await through_bridge(
                server, workdir, events, None, "throughput (max), XEP-0114 component, no TLS",
                component=True,
            )  # fmt: skip
            report(result)
            print(f"    ratio to the direct publisher: {result['rate'] / baseline['rate']:.2f}")
        if only in (None, "batched"):
            result = await through_bridge(
                server, workdir, events, None, "throughput (max), 10 changes per stanza (opt-in)",
                changes_per_stanza=10,
            )  # fmt: skip
            report(result)
            print(f"    ratio to the direct publisher: {result['rate'] / baseline['rate']:.2f}")
        if only in (None, "latency"):
            direct = await direct_publisher(server, 1000, 100, room_name="directpaced")
            print(f"  baseline, direct publisher paced at 100/s: latency publisher -> reader: "
                  f"{summary(direct['latencies'])}")  # type: ignore[arg-type]  # fmt: skip
            report(await through_bridge(server, workdir, 1000, 100, "latency at 100/s"))
            half = max(100.0, baseline["rate"] / 2)
            report(
                await through_bridge(
                    server,
                    workdir,
                    min(events, int(half * 10)),
                    half,
                    f"latency at {half:.0f}/s (half the baseline)",
                )
            )
        if only in (None, "burst"):
            report(await through_bridge(server, workdir, 10_000, None, "burst of 10,000"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument(
        "--only", choices=["throughput", "component", "batched", "latency", "burst"]
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.only))
