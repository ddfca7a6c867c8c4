"""Faults under a sustained stream: what was lost, duplicated, how long recovery took,
and the bridge's memory during the outage.

    .venv/bin/python -m benchmarks.faults [--rate 200] [--outage 5]

Each scenario runs a fresh Prosody (SQL archive, so it survives a restart) and
udp2xmpp as its own process, sends changes at a steady rate for the whole run,
injects one fault, and at the end reads the room's archive: every change sent
must be there. Duplicates in the archive are what a client drops by stable id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from benchmarks.bridge import free_udp_port
from benchmarks.common import BIN, process_rss_mb, sample_change
from harness.prosody import ProsodyServer
from tests.helpers import archived_stable_ids
from xmlrc.wire import DatagramFormat, encode_datagram

WIKI = "faultwiki"


class BridgeProcess:
    def __init__(self, server: ProsodyServer, workdir: Path) -> None:
        self.server, self.workdir = server, workdir
        self.udp_port = free_udp_port()
        self._write_config(free_udp_port())
        self.log = workdir / "bridge.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self, http_port: int) -> None:
        server = self.server
        self.http_port = http_port
        self.config = self.workdir / f"bridge-{http_port}.toml"
        self.config.write_text(
            f"""[xmpp]
jid = "rcbot@{server.domain}"
password = "bridgepass"
host = "{server.host}"
port = {server.c2s_port}
ca_file = "{server.ca_file}"
ping_timeout = 10
self_ping_interval = 2
[udp]
listen = "127.0.0.1:{self.udp_port}"
[rooms]
service = "{server.muc_domain}"
wikis = ["{WIKI}"]
[http]
listen = "127.0.0.1:{self.http_port}"
"""
        )

    async def handover(self) -> None:
        """The documented zero-loss restart: start the new bridge on the same UDP port
        (SO_REUSEPORT), wait until it is ready, then SIGTERM the old one (it drains)."""
        old = self.process
        self._write_config(free_udp_port())
        self.start()
        await self.wait_ready()
        assert old is not None
        old.send_signal(signal.SIGTERM)
        old.wait(timeout=60)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "udp2xmpp"), "--config", str(self.config), "--log-level", "warning"],
                stdout=out, stderr=out,
            )  # fmt: skip

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    async def metrics(self) -> dict[str, float]:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{self.http_port}/metrics",
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as response,
            ):
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        out = {}
        for name in ("pending_changes", "xmpp_connected", "xmpp_confirmed"):
            match = re.search(rf"^udp2xmpp_{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
            if match:
                out[name] = float(match.group(1))
        return out

    async def wait_ready(self, limit: float = 90) -> None:
        deadline = time.monotonic() + limit
        while (await self.metrics()).get("xmpp_connected") != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("bridge not ready")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # the room join


async def scenario(
    name: str, rate: float, outage: float,
    fault: Callable[[ProsodyServer, BridgeProcess], Awaitable[None]],
    recover: Callable[[ProsodyServer, BridgeProcess], Awaitable[None]],
) -> str:  # fmt: skip
    server = ProsodyServer(muc_log_storage="sql")
    try:
        server.add_user("rcbot", "bridgepass")
        server.add_user("intruder", "intruderpass")
        server.start()
        with tempfile.TemporaryDirectory() as tmp:
            bridge = BridgeProcess(server, Path(tmp))
            bridge.start()
            await bridge.wait_ready()
            total = int(rate * (10 + outage + 5))
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sent_ids: list[str] = []
            rss_during: list[float] = []
            began = time.perf_counter()
            fault_at, recover_at = 5.0, 5.0 + outage
            faulted = recovered = False
            recovered_time = 0.0
            caught_up = float("nan")

            async def watch() -> None:
                # Recovery: from the end of the fault until the backlog is gone (a
                # steady stream keeps about a tenth of a second's worth pending).
                nonlocal caught_up
                while True:
                    await asyncio.sleep(0.1)
                    if not recovered:
                        continue
                    figures = await bridge.metrics()
                    if (figures.get("xmpp_connected") == 1
                            and figures.get("pending_changes", 1e9) <= rate / 10):  # fmt: skip
                        caught_up = time.perf_counter() - recovered_time
                        return

            watcher = asyncio.create_task(watch())
            for index in range(total):
                now = time.perf_counter() - began
                if not faulted and now >= fault_at:
                    await fault(server, bridge)
                    faulted = True
                if faulted and not recovered and bridge.process and bridge.process.poll() is None:
                    rss_during.append(process_rss_mb(bridge.process.pid))
                if faulted and not recovered and now >= recover_at:
                    await recover(server, bridge)
                    recovered, recovered_time = True, time.perf_counter()
                delay = began + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                change = sample_change(WIKI, index + 1)
                sock.sendto(encode_datagram(change, DatagramFormat.MW_JSON),
                            ("127.0.0.1", bridge.udp_port))  # fmt: skip
                sent_ids.append(change.stable_id)
            sock.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher, 120)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                figures = await bridge.metrics()
                if figures.get("pending_changes") == 0 and figures.get("xmpp_connected") == 1:
                    break
                await asyncio.sleep(0.1)
            watcher.cancel()
            if fault is start_new_then_stop_old:
                caught_up = float("nan")  # no outage to recover from
            rss_end = process_rss_mb(bridge.process.pid) if bridge.process else 0.0
            status = bridge.stop()
            archived = await archived_stable_ids(server, f"{WIKI}@{server.muc_domain}")
    finally:
        server.cleanup()
    unique = set(archived)
    lost = sum(1 for i in sent_ids if i not in unique)
    duplicated = len(archived) - len(unique)
    peak = max(rss_during, default=float("nan"))
    return (
        f"| {name} | {len(sent_ids)} | {len(unique & set(sent_ids))} | {lost} | "
        f"{duplicated} (0 after client dedupe) | "
        f"{'none needed' if caught_up != caught_up else f'{caught_up:.1f} s'} | "
        f"{peak:.0f} MB peak, {rss_end:.0f} MB end | exit {status} |"
    )


async def kill_prosody(server: ProsodyServer, _: BridgeProcess) -> None:
    server.kill()


async def start_prosody(server: ProsodyServer, _: BridgeProcess) -> None:
    server.start()


async def freeze(server: ProsodyServer, _: BridgeProcess) -> None:
    server.freeze()


async def thaw(server: ProsodyServer, _: BridgeProcess) -> None:
    server.thaw()


async def stop_bridge(_: ProsodyServer, bridge: BridgeProcess) -> None:
    bridge.stop()


async def start_bridge(_: ProsodyServer, bridge: BridgeProcess) -> None:
    bridge.start()


async def start_new_then_stop_old(_: ProsodyServer, bridge: BridgeProcess) -> None:
    await bridge.handover()


async def nothing(_: ProsodyServer, __: BridgeProcess) -> None:
    return None


async def client_cut(rate: float) -> str:
    """A reader's TCP connection is cut mid-stream; it reconnects and catches up from
    the room archive (XEP-0313)."""
    from rcclient import RCClient

    server = ProsodyServer(muc_log_storage="sql")
    try:
        for user, password in (("rcbot", "bridgepass"), ("reader", "readerpass"),
                               ("intruder", "intruderpass")):  # fmt: skip
            server.add_user(user, password)
        server.start()
        with tempfile.TemporaryDirectory() as tmp:
            bridge = BridgeProcess(server, Path(tmp))
            bridge.start()
            await bridge.wait_ready()
            room = f"{WIKI}@{server.muc_domain}"
            client = RCClient(server.jid("reader"), "readerpass", [room], host=server.host,
                              port=server.c2s_port, ca_file=str(server.ca_file))  # fmt: skip
            got: dict[str, float] = {}
            async with client:

                async def read() -> None:
                    async for change in client.changes():
                        got.setdefault(change.stable_id, time.perf_counter())

                reader_task = asyncio.create_task(read())
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                total = int(rate * 15)
                began = time.perf_counter()
                cut_at = 0.0
                sent: list[str] = []
                for index in range(total):
                    if not cut_at and index >= rate * 5:
                        assert client.xmpp.transport is not None
                        client.xmpp.transport.abort()  # the socket dies, no goodbye
                        cut_at = time.perf_counter()
                    delay = began + index / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    change = sample_change(WIKI, index + 1)
                    sock.sendto(encode_datagram(change, DatagramFormat.MW_JSON),
                                ("127.0.0.1", bridge.udp_port))  # fmt: skip
                    sent.append(change.stable_id)
                sock.close()
                deadline = time.monotonic() + 90
                while len(got) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                reader_task.cancel()
                # Recovery: until every change sent before the cut (and during the
                # reconnect) had reached the reader again.
                sent_before = [i for i in sent[: int(rate * 6)] if i in got]
                recovery = max((got[i] for i in sent_before), default=cut_at) - cut_at
                duplicates = client.duplicates
            bridge.stop()
    finally:
        server.cleanup()
    lost = sum(1 for i in sent if i not in got)
    return (
        f"| reader's connection cut (rcclient) | {len(sent)} | {len(got)} delivered | "
        f"{lost} | {duplicates} dropped by the client, 0 delivered twice | "
        f"{recovery:.1f} s | - | - |"
    )


async def main(rate: float, outage: float) -> None:
    print(
        f"# {rate:.0f} changes/s for {10 + outage + 5:.0f} s; fault at 5 s, lasting {outage:.0f} s"
    )
    print(
        "| fault | sent | in the archive | lost | duplicated | recovery | bridge memory | bridge |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, fault, recover in (
        ("Prosody SIGKILL, restarted", kill_prosody, start_prosody),
        ("Prosody SIGSTOP past the ping timeout, SIGCONT", freeze, thaw),
        ("bridge SIGTERM, started again (UDP sent meanwhile is lost)", stop_bridge,
         start_bridge),
        ("bridge restarted the documented way: new one first, then SIGTERM to the old",
         start_new_then_stop_old, nothing),
    ):  # fmt: skip
        print(await scenario(name, rate, outage, fault, recover), flush=True)
    print(await client_cut(rate), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--outage", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.outage))
