"""A farm of wikis: how fast the bridge enters N rooms (join, own, configure, verify) and
confirms one change in each, beside a plain client that only joins N rooms, same run.

    .venv/bin/python -m benchmarks.rooms [--rooms 1000]

The bridge runs in this process against a throwaway Prosody on loopback; it
verifies every room (owner, moderated) before publishing, with at most
``delivery.max_iq_in_flight`` room entries and pings in flight. The baseline
is a slixmpp client joining as many rooms of its own, all at once, with
no configuration: the server's own cost of N joins.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from pathlib import Path

from benchmarks.common import client, connect, prosody_server, sample_change
from harness.prosody import ProsodyServer
from udp2xmpp.bridge import Bridge
from udp2xmpp.config import parse_config
from udp2xmpp.sink.outgoing import Outgoing
from udp2xmpp.sink.stanza import payload_text


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def baseline_joins(server: ProsodyServer, rooms: int) -> float:
    """Seconds for a plain client to join `rooms` new rooms, all requested at once."""
    xmpp = client(server, "direct", "directpass")
    await connect(xmpp, server)
    muc = xmpp.plugin["xep_0045"]
    started = time.perf_counter()
    try:
        await asyncio.gather(
            *(
                muc.join_muc_wait(
                    f"plain{n}@{server.muc_domain}", "plain", maxstanzas=0, timeout=300
                )
                for n in range(rooms)
            )
        )
        return time.perf_counter() - started
    finally:
        xmpp.disconnect()
        await asyncio.sleep(0.1)


async def bridge_farm(server: ProsodyServer, rooms: int, in_flight: int) -> dict[str, float]:
    wikis = [f"farm{in_flight}x{n}wiki" for n in range(rooms)]  # new rooms each run
    config = parse_config(
        {
            "xmpp": {
                "jid": server.jid("rcbot"),
                "password": "bridgepass",
                "host": server.host,
                "port": server.c2s_port,
                "ca_file": str(server.ca_file),
            },
            "udp": {"listen": "127.0.0.1:0"},
            "rooms": {"service": server.muc_domain, "wikis": wikis},
            "delivery": {"max_iq_in_flight": in_flight},
        },
        base_dir=Path("."),
    )
    bridge = Bridge(config)
    started = time.perf_counter()
    await bridge.start()
    try:
        while len(bridge.sink.joined_rooms()) < rooms:
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {len(bridge.sink.joined_rooms())} rooms after 600 s")
            await asyncio.sleep(0.05)
        joined = time.perf_counter() - started
        sent = time.perf_counter()
        for n, wiki in enumerate(wikis):
            change = sample_change(wiki, n + 1)
            payload = payload_text(change)
            room = bridge.router.wiki_room(wiki)
            bridge.sink.submit(room, Outgoing(change, payload, len(payload.encode())))
        while bridge.sink.stats.confirmed < rooms:
            if time.perf_counter() - sent > 600:
                raise RuntimeError(f"only {bridge.sink.stats.confirmed} confirmed after 600 s")
            await asyncio.sleep(0.05)
        return {
            "joined_s": joined,
            "confirmed_s": time.perf_counter() - sent,
            "connections": bridge.sink.stats.connections,
            "refused": len(bridge.sink.refused_rooms()),
            "join_failures": bridge.sink.stats.join_failures,
            "tasks": len(asyncio.all_tasks()),
        }
    finally:
        await bridge.stop()


async def main(rooms: int) -> None:
    with prosody_server() as server:
        print(f"# Prosody 0.12 on loopback, STARTTLS; {rooms} rooms")
        base = await baseline_joins(server, rooms)
        print(f"baseline, a plain client joining {rooms} rooms at once: {base:.1f} s "
              f"({rooms / base:.0f} joins/s)")  # fmt: skip
        for in_flight in (64, 8):
            result = await bridge_farm(server, rooms, in_flight)
            print(
                f"  bridge, max_iq_in_flight={in_flight}: {rooms} rooms entered and verified in "
                f"{result['joined_s']:.1f} s ({rooms / result['joined_s']:.0f}/s, ratio to the "
                f"baseline {base / result['joined_s']:.2f}); one change per room confirmed in "
                f"{result['confirmed_s']:.1f} s; connections {result['connections']:.0f}, "
                f"join failures {result['join_failures']:.0f}, refused {result['refused']:.0f}, "
                f"tasks {result['tasks']:.0f}, peak RSS {rss_mb():.0f} MB"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.rooms))
