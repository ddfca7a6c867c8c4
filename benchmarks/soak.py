"""Soak: a long steady stream through the bridge; memory, descriptors and tasks stay flat.

    .venv/bin/python -m benchmarks.soak [--events 1000000] [--rate 1000]

The bridge runs as its own process against a throwaway Prosody (room archive
off: a million messages would only measure Prosody's memory). Every 10 s it
prints what the bridge's /metrics and /proc say: published and confirmed
changes, pending, asyncio tasks, open file descriptors and resident memory.
At the end: the same at the start (after a warm-up) and at the end, and
whether anything was lost (published == confirmed == sent, nothing dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.bridge import free_udp_port
from benchmarks.common import BIN, process_rss_mb, sample_change
from harness.prosody import ProsodyServer
from xmlrc.wire import DatagramFormat, encode_datagram

WIKI = "soakwiki"


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def scrape(port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)
        ) as response,
    ):
        text = await response.text()
    out: dict[str, float] = {}
    for name in ("xmpp_confirmed", "pending_changes", "asyncio_tasks", "changes_accepted"):
        match = re.search(rf"^udp2xmpp_{name}(?:_total)? ([0-9.e+]+)$", text, re.MULTILINE)
        out[name] = float(match.group(1)) if match else float("nan")
    dropped = re.findall(r'^udp2xmpp_dropped_total\{reason="\w+"\} ([0-9.e+]+)$', text, re.M)
    out["dropped"] = sum(float(value) for value in dropped)
    return out


async def main(events: int, rate: float) -> None:
    import subprocess

    server = ProsodyServer(extra_muc='modules_disabled = { "muc_mam" }')
    try:
        server.add_user("rcbot", "bridgepass")
        server.start()
        with tempfile.TemporaryDirectory() as tmp:
            udp_port, http_port = free_udp_port(), free_udp_port()
            config = Path(tmp) / "bridge.toml"
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
[http]
listen = "127.0.0.1:{http_port}"
"""
            )
            log = (Path(tmp) / "bridge.log").open("wb")
            bridge = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop matters
                [str(BIN / "udp2xmpp"), "--config", str(config), "--log-level", "warning"],
                stdout=log, stderr=log,
            )  # fmt: skip
            try:
                await run(bridge.pid, udp_port, http_port, events, rate)
            finally:
                bridge.terminate()
                bridge.wait(timeout=60)
                log.close()
    finally:
        server.cleanup()


async def run(pid: int, udp_port: int, http_port: int, events: int, rate: float) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await scrape(http_port))["asyncio_tasks"] > 0:
                break
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the bridge did not come up")
        await asyncio.sleep(0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    template = encode_datagram(sample_change(WIKI, 1), DatagramFormat.MW_JSON)
    marker = b'"id":1,'
    assert marker in template

    def datagram(rcid: int) -> bytes:
        return template.replace(marker, b'"id":%d,' % rcid, 1)

    warmup = min(10_000, events // 10)
    start_figures: tuple[float, int, float] | None = None
    began = time.perf_counter()
    next_report = time.monotonic() + 10
    print(f"# soak: {events} changes at {rate:.0f}/s through udp2xmpp (pid {pid})")
    print(
        f"{'t/s':>6} {'sent':>9} {'confirmed':>9} {'pending':>8} {'tasks':>6} "
        f"{'fds':>4} {'RSS/MB':>7}"
    )
    for index in range(events):
        due = began + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sock.sendto(datagram(index + 1), ("127.0.0.1", udp_port))
        if index + 1 == warmup:
            await asyncio.sleep(2)
            figures = await scrape(http_port)
            start_figures = (figures["asyncio_tasks"], fds(pid), process_rss_mb(pid))
        if time.monotonic() >= next_report:
            next_report += 10
            f = await scrape(http_port)
            print(
                f"{time.perf_counter() - began:6.0f} {index + 1:9d} {f['xmpp_confirmed']:9.0f} "
                f"{f['pending_changes']:8.0f} {f['asyncio_tasks']:6.0f} {fds(pid):4d} "
                f"{process_rss_mb(pid):7.1f}",
                flush=True,
            )
    sock.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        final = await scrape(http_port)
        if final["pending_changes"] == 0 and final["xmpp_confirmed"] >= events:
            break
        await asyncio.sleep(1)
    assert start_figures is not None
    tasks0, fds0, rss0 = start_figures
    print(
        f"# sent {events}, accepted {final['changes_accepted']:.0f}, confirmed "
        f"{final['xmpp_confirmed']:.0f}, pending {final['pending_changes']:.0f}, dropped "
        f"{final['dropped']:.0f}"
    )
    print(f"# after warm-up: tasks {tasks0:.0f}, fds {fds0}, RSS {rss0:.1f} MB")
    print(
        f"# at the end:    tasks {final['asyncio_tasks']:.0f}, fds {fds(pid)}, RSS "
        f"{process_rss_mb(pid):.1f} MB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate))
