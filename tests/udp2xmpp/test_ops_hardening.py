"""The ops listener under attack, against the real listener of a bridge on real Prosody:
slow clients are closed, the connection count stays under its cap, /healthz
answers meanwhile, the process's descriptors stay bounded, and running out of
descriptors is logged a few times, not once per retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from udp2xmpp.config import HttpSettings
from udp2xmpp.httpd import OpsServer

HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag"  # and then nothing


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def closed_by_peer(reader: asyncio.StreamReader, within: float = 30.0) -> bool:
    """Whether the other end closes the connection (FIN or RST) within `within` seconds
    (a generous bound: the point is that it closes at all)."""

    async def until_eof() -> None:
        for _ in range(10_000):  # bounded: a response is small
            if not await reader.read(65536):
                return

    try:
        await asyncio.wait_for(until_eof(), within)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


async def healthz(host: str, port: int) -> int:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{host}:{port}/healthz") as response,
    ):
        await response.read()
        return response.status


@contextlib.asynccontextmanager
async def slow_clients(
    host: str, port: int, count: int
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """`count` connections that each send half a request line and wait; all closed at exit."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(HALF_REQUEST)
            readers.append(reader)
            writers.append(writer)
        yield readers
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def bridge(prosody: ProsodyServer) -> AsyncIterator[Bridge]:
    config = bridge_config(
        prosody,
        http={
            "listen": "127.0.0.1:0",
            "request_timeout": 1.0,
            "max_connections": 8,
            "max_connection_seconds": 600.0,  # out of the way: the request deadline closes
        },
    )
    running = await running_bridge(config)
    try:
        yield running
    finally:
        await running.stop()


async def test_half_sent_requests_are_closed_after_the_request_timeout(bridge: Bridge) -> None:
    assert bridge.http is not None and bridge.http_address is not None
    host, port = bridge.http_address
    guard = bridge.http.guard
    assert guard is not None
    async with slow_clients(host, port, 8) as readers:  # within the cap: none shed
        await wait_for(lambda: guard.open == 8, what="8 connections open")
        closed = await asyncio.gather(*(closed_by_peer(reader) for reader in readers))
    assert all(closed)
    assert guard.shed_over_cap == 0 and guard.shed_too_long == 0  # the request deadline did it
    await wait_for(lambda: guard.open == 0, what="no connection left open")

    # An idle keep-alive connection is closed the same way after its response.
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 200")
        assert await closed_by_peer(reader)
    finally:
        writer.close()
    assert guard.shed_over_cap == 0 and guard.shed_too_long == 0


async def test_many_slow_clients_stay_under_the_cap_and_healthz_answers(bridge: Bridge) -> None:
    assert bridge.http is not None and bridge.http_address is not None
    host, port = bridge.http_address
    guard = bridge.http.guard
    assert guard is not None
    before = fd_count()
    opened = 60
    async with slow_clients(host, port, opened) as readers:
        await wait_for(lambda: guard.accepted >= opened, what="every connection accepted")
        # The slow ones are still open (1 s deadline): a normal client gets in anyway.
        statuses = [await healthz(host, port) for _ in range(3)]
        during = fd_count()
        closed = await asyncio.gather(*(closed_by_peer(reader) for reader in readers))
    assert statuses == [200, 200, 200]
    assert all(closed)
    assert guard.peak <= 8  # never more than the cap open
    assert guard.shed_over_cap >= opened - 8
    # Our 60 client sockets, at most the cap of the bridge's own (plus one being shed)
    # and a few of aiohttp's client: bounded, whatever the number of slow clients.
    assert during <= before + opened + 8 + 1 + 10
    await wait_for(lambda: guard.open == 0, what="no connection left open")
    await wait_for(lambda: fd_count() <= before + 2, what="the descriptors back")

    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{host}:{port}/metrics") as response,
    ):
        text = await response.text()
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    shed = values[("udp2xmpp_http_connections_shed_total", (("reason", "over_cap"),))]
    assert shed == guard.shed_over_cap
    assert values[("udp2xmpp_http_connections_total", ())] >= opened + 3


async def test_a_connection_open_too_long_is_aborted(bridge: Bridge) -> None:
    # A second listener for the same bridge, whose request deadline is out of the way:
    # the lifetime cap alone closes the slow client.
    settings = HttpSettings(
        listen=("127.0.0.1", 0), request_timeout=600.0, max_connection_seconds=1.0
    )
    server = OpsServer(bridge, CollectorRegistry(), "127.0.0.1", 0, settings)
    host, port = await server.start()
    try:
        assert server.guard is not None
        async with slow_clients(host, port, 3) as readers:
            closed = await asyncio.gather(*(closed_by_peer(reader) for reader in readers))
        assert all(closed)
        assert server.guard.shed_too_long == 3 and server.guard.shed_over_cap == 0
    finally:
        await server.stop()


async def test_running_out_of_descriptors_is_logged_a_few_times_and_recovers(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    assert bridge.http is not None and bridge.http_address is not None
    host, port = bridge.http_address
    http = bridge.http
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients: list[socket.socket] = []
    caplog.set_level(logging.WARNING)
    try:
        # A limit that leaves exactly 5 free descriptors, for 5 client sockets: the
        # listener's accept() then fails with EMFILE, retried by asyncio every second.
        used = {int(name) for name in os.listdir("/proc/self/fd")}
        limit = next(n for n in range(soft) if n - len({u for u in used if u < n}) == 5)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        for _ in range(5):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect((host, port))  # completes in the kernel's backlog
            clients.append(client)
        await wait_for(lambda: http.accept_errors >= 6, timeout=60, what="6 failed accepts")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        lines = [r for r in caplog.records if "cannot accept HTTP connections" in r.getMessage()]
        assert 1 <= len(lines) <= 3  # RateLimitedLog: 3 a minute, however many failures
        assert not [r for r in caplog.records if r.name == "asyncio" and "accept" in r.getMessage()]
        # Descriptors back: the listener accepts again and answers.
        await wait_for(
            lambda: http.accept_errors >= 6 and http.guard is not None and http.guard.accepted >= 5,
            timeout=30,
            what="the backlog accepted",
        )
        assert await healthz(host, port) == 200
    finally:
        for client in clients:
            client.close()
