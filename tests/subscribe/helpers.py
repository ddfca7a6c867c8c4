"""Helpers of the watch and PubSub tests: changes, and a person's chat client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import slixmpp

from harness.prosody import ProsodyServer
from tests.helpers import running_bridge
from udp2xmpp.bridge import Bridge
from udp2xmpp.config import BridgeConfig
from xmlrc_emitter import RecentChange


def change(
    title: str = "Sandbox",
    rcid: int = 1,
    *,
    wiki: str = "testwiki",
    user: str = "Alice",
    ns: int = 0,
    oldlen: int = 20,
    newlen: int = 27,
    **fields: Any,
) -> RecentChange:
    values: dict[str, Any] = {
        "wiki": wiki, "type": "edit", "ns": ns, "title": title, "user": user,
        "comment": "fix a typo", "timestamp": datetime(2026, 11, 21, 22, 31, 2, tzinfo=UTC),
        "rcid": rcid, "revid": 1000 + rcid, "old_revid": 999 + rcid, "oldlen": oldlen,
        "newlen": newlen, "server_url": "https://test.example.org", "server_script_path": "/w",
    }  # fmt: skip
    values.update(fields)
    return RecentChange(**values)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Person:
    """An ordinary XMPP client: sends chat lines to the bridge, collects what comes back."""

    def __init__(self, prosody: ProsodyServer, user: str, password: str) -> None:
        self.jid = prosody.jid(user)
        self.prosody = prosody
        client = slixmpp.ClientXMPP(self.jid, password)
        client.register_plugin("xep_0030")
        client.register_plugin("xep_0004")
        client.register_plugin("xep_0050")
        client.enable_direct_tls = False
        client.ca_certs = prosody.ca_file
        self.client = client
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        client.add_event_handler("message", self._on_message)

    def _on_message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal"):
            self.inbox.put_nowait(msg)

    async def __aenter__(self) -> Person:
        available = asyncio.Event()

        def on_presence(presence: Any) -> None:
            # The server echoes our presence once it has it: from then on, messages to
            # our bare JID reach us (before, with no offline storage, they bounce).
            if presence["from"] == self.client.boundjid and presence["type"] == "available":
                available.set()

        self.client.add_event_handler("session_start", lambda _: self.client.send_presence())
        self.client.add_event_handler("presence", on_presence)
        self.client.connect(self.prosody.host, self.prosody.c2s_port)
        await asyncio.wait_for(available.wait(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect()
        await asyncio.sleep(0)

    def say(self, to: str, text: str) -> None:
        self.client.send_message(mto=to, mbody=text, mtype="chat")

    async def ask(self, to: str, text: str, timeout: float = 10.0) -> str:
        """Send one line, return the body of the answer."""
        self.say(to, text)
        reply = await self.next(timeout)
        return str(reply["body"])

    async def next(self, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def quiet(self, seconds: float = 0.5) -> list[Any]:
        """What else arrives within `seconds` (for asserting that nothing more came)."""
        await asyncio.sleep(seconds)
        extra = []
        while not self.inbox.empty():
            extra.append(self.inbox.get_nowait())
        return extra


async def started(config: BridgeConfig) -> Bridge:
    """A running bridge that people can talk to: its presence is with the server (it is in
    its rooms, joined on the same stream after it), so messages to its JID reach it."""
    bridge = await running_bridge(config)
    rooms = [room.jid for room in bridge.router.static_rooms]
    await until(lambda: set(rooms) <= set(bridge.sink.joined_rooms()), 20, "the rooms")
    return bridge


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "it") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
