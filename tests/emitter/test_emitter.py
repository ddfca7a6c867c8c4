"""The emitter sends decodable datagrams, sync and async, in every format."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncio_dgram
import pytest

from tests.fixtures import JSON_FEED_PORT, packets
from xmlrc.wire import change_to_json, decode_datagram
from xmlrc_emitter import AsyncEmitter, DatagramFormat, Emitter, RecentChange

CHANGE = RecentChange(
    wiki="mywiki", type="edit", ns=0, title="Main Page", user="Alice", comment="fix",
    timestamp=datetime(2026, 11, 21, 12, 0, tzinfo=UTC), rcid=7, revid=9, old_revid=8,
    oldlen=100, newlen=90, minor=True, patrolled=True,
)  # fmt: skip
XMLRC_EMIT = Path(sys.executable).parent / "xmlrc-emit"


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


@pytest.mark.parametrize("fmt", list(DatagramFormat))
def test_sync_emitter_sends_one_decodable_datagram(receiver: socket.socket, fmt: str) -> None:
    with Emitter(*receiver.getsockname(), fmt=fmt) as emitter:
        size = emitter.send(CHANGE)
    data, _ = receiver.recvfrom(65535)
    assert len(data) == size
    assert decode_datagram(data) == CHANGE


def test_sync_emitter_with_line_prefix(receiver: socket.socket) -> None:
    with Emitter(*receiver.getsockname(), prefix="farm") as emitter:
        emitter.send(CHANGE)
    data, _ = receiver.recvfrom(65535)
    assert data.startswith(b"farm <rc ")
    assert decode_datagram(data) == CHANGE


async def test_async_emitter_sends_to_an_asyncio_receiver() -> None:
    server = await asyncio_dgram.bind(("127.0.0.1", 0))
    try:
        async with AsyncEmitter(*server.sockname[:2], fmt="mw-json") as emitter:
            for rcid in range(1, 4):
                await emitter.send(CHANGE.with_changes(rcid=rcid))
        got = [decode_datagram((await server.recv())[0]) for _ in range(3)]
    finally:
        server.close()
    assert [c.rcid for c in got if isinstance(c, RecentChange)] == [1, 2, 3]


def test_a_change_too_large_for_udp_is_refused_not_cut(receiver: socket.socket) -> None:
    huge = CHANGE.with_changes(comment="x" * 70_000)
    with Emitter(*receiver.getsockname()) as emitter, pytest.raises(ValueError, match="larger"):
        emitter.send(huge)


def test_xmlrc_emit_sends_json_lines_from_stdin(receiver: socket.socket) -> None:
    host, port = receiver.getsockname()
    lines = b"".join(p + b"\n" for p in packets(JSON_FEED_PORT)[:3])
    result = subprocess.run(
        [str(XMLRC_EMIT), "--target", f"{host}:{port}"],
        input=lines,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"sent 3 changes" in result.stderr
    got = [decode_datagram(receiver.recvfrom(65535)[0]) for _ in range(3)]
    assert got == [decode_datagram(p) for p in packets(JSON_FEED_PORT)[:3]]


def test_xmlrc_emit_builds_a_change_from_options(receiver: socket.socket) -> None:
    host, port = receiver.getsockname()
    result = subprocess.run(
        [str(XMLRC_EMIT), "--target", f"{host}:{port}", "--format", "mw-xml", "--wiki", "w",
         "--title", "Über", "--user", "Bob", "--rcid", "5", "--bot", "--comment", "hi"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    change = decode_datagram(receiver.recvfrom(65535)[0])
    assert isinstance(change, RecentChange)
    assert (change.wiki, change.title, change.user, change.rcid, change.bot, change.comment) == (
        "w",
        "Über",
        "Bob",
        5,
        True,
        "hi",
    )


def test_xmlrc_emit_names_the_bad_line() -> None:
    good = json.dumps(change_to_json(CHANGE)).encode()
    result = subprocess.run(
        [str(XMLRC_EMIT), "--target", "127.0.0.1:9"],
        input=good + b"\n{oops\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("xmlrc-emit: line 2:")
