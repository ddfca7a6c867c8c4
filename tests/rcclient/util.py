"""Helpers for the rcclient tests: synthetic changes, a bridge with its rooms, a sender."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness.prosody import ProsodyServer
from rcclient import Delivery, Gap, RCClient
from tests.helpers import archived_messages, bridge_config, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from xmlrc.wire import RecentChange
from xmlrc_emitter import Emitter

#: The console script installed next to the Python running the tests (the venv's).
RCCLIENT = str(Path(sys.executable).parent / "rcclient")
EPOCH = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def change(wiki: str, rcid: int, **fields: Any) -> RecentChange:
    """An edit on `wiki` with rcid `rcid` (+rcid % 7 bytes); `fields` override."""
    values: dict[str, Any] = {
        "wiki": wiki,
        "type": "edit",
        "ns": 0,
        "title": f"Page {rcid}",
        "user": "Alice",
        "timestamp": EPOCH + timedelta(seconds=rcid),
        "rcid": rcid,
        "revid": 10_000 + rcid,
        "old_revid": 9_999 + rcid,
        "oldlen": 1_000,
        "newlen": 1_000 + rcid % 7,
        "comment": f"edit number {rcid}",
        "server_url": "http://127.0.0.1:8080",
        "server_name": "127.0.0.1",
        "server_script_path": "/w",
    }
    values.update(fields)
    return RecentChange(**values)


def room_of(prosody: ProsodyServer, wiki: str) -> str:
    return f"{wiki}@{prosody.muc_domain}"


@asynccontextmanager
async def bridge_for(prosody: ProsodyServer, *wikis: str) -> AsyncIterator[Bridge]:
    """The real bridge, in this process, with the rooms of `wikis` created and joined."""
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": list(wikis)}))
    try:
        rooms = {room_of(prosody, wiki) for wiki in wikis}
        await wait_for(lambda: rooms <= set(bridge.sink.joined_rooms()), 30, "the bridge's rooms")
        yield bridge
    finally:
        await bridge.stop()


def send(bridge: Bridge, changes: Iterable[RecentChange]) -> int:
    """Send `changes` to the bridge now, one datagram each; returns how many."""
    sent = 0
    with Emitter(*bridge.addresses[0]) as emitter:
        for item in changes:
            emitter.send(item)
            sent += 1
    return sent


async def send_steadily(
    bridge: Bridge, changes: list[RecentChange], interval: float = 0.02
) -> None:
    """Send `changes` one every `interval` seconds (a stream that keeps flowing)."""
    with Emitter(*bridge.addresses[0]) as emitter:
        for item in changes:
            emitter.send(item)
            await asyncio.sleep(interval)


async def published(bridge: Bridge, total: int, timeout: float = 30.0) -> None:
    """Wait until the bridge took `total` changes in all and the server confirmed them
    (they are in the rooms' archives)."""
    await wait_for(lambda: bridge.stats.accepted >= total, timeout, f"{total} changes accepted")
    assert await bridge.sink.drain(timeout), "the bridge could not deliver its queue"


class Reader:
    """Reads a client's events in a background task (a test's own consumer)."""

    def __init__(self, client: RCClient) -> None:
        self.client = client
        self.deliveries: list[Delivery] = []
        self.gaps: list[Gap] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reader:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async for event in self.client.events():
            if isinstance(event, Gap):
                self.gaps.append(event)
            else:
                self.deliveries.append(event)

    def rcids(self) -> list[int | None]:
        return [d.change.rcid for d in self.deliveries]

    async def wait_count(self, count: int, timeout: float = 30.0) -> None:
        await wait_for(
            lambda: len(self.deliveries) >= count,
            timeout,
            f"{count} changes (got {len(self.deliveries)}: {self.rcids()[-5:]}...)",
        )


async def room_bodies(prosody: ProsodyServer, room: str) -> list[str]:
    """The bodies of every message in `room`'s archive (read as another user)."""
    bodies = []
    for result in await archived_messages(prosody, room):
        body = result.xml.find(
            "{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded"
            "/{jabber:client}message/{jabber:client}body"
        )
        if body is not None and body.text:
            bodies.append(body.text)
    return bodies
