"""Helpers for the trust tests: occupants that post ``<rc>`` payloads into rooms by hand.

No bridge here on purpose: the rooms, their owners and their configuration
are exactly what each test says (a publisher that owns a moderated room, a
forger in a room of its own...), made with the shared XMPP layer.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness.prosody import ProsodyServer
from rcclient import Delivery, RCClient
from xmlrc.wire import RecentChange
from xmlrc.wire.rcxml import change_to_xml_text
from xmlrc.xmpp import Endpoint, Session, muc

#: Passwords of the fixture accounts (tests/conftest.py).
PASSWORDS = {"rcbot": "bridgepass", "reader": "readerpass", "intruder": "intruderpass"}
#: The second account of a bridge pair: not a fixture account, `add_user` it first.
PASSWORDS["rcbot2"] = "bridge2pass"
#: Room configurations.
MODERATED: Mapping[str, bool | int | str] = {"muc#roomconfig_moderatedroom": True}
UNMODERATED: Mapping[str, bool | int | str] = {"muc#roomconfig_moderatedroom": False}
NON_ANONYMOUS: Mapping[str, bool | int | str] = {
    "muc#roomconfig_moderatedroom": True,
    "muc#roomconfig_whois": "anyone",
}


def payload(change: RecentChange) -> str:
    """The ``<rc>`` element the bridge would publish for `change`."""
    return change_to_xml_text(change)


def overflowing(change: RecentChange) -> str:
    """`change`'s ``<rc>`` with a timestamp that overflows when converted to UTC
    (the last second of year 9999, one minute west of Greenwich)."""
    text = payload(change)
    return re.sub(r'timestamp="[^"]*"', 'timestamp="9999-12-31T23:59:59-00:01"', text)


@dataclass
class Occupant:
    """An account in a room under a nick, posting groupchat messages."""

    session: Session
    room: str
    nick: str
    occupancy: muc.Occupancy
    reflected: list[str] = field(default_factory=list)

    async def post(self, *payloads: str, timeout: float = 20.0) -> None:
        """Post one message per payload (body and ``<rc>``), and wait until the room
        reflected them all (then they are in its archive too)."""
        wanted = len(self.reflected) + len(payloads)
        for text in payloads:
            message = self.session.client.make_message(
                mto=slixmpp.JID(self.room), mbody="a change", mtype="groupchat"
            )
            message.xml.append(ET.fromstring(text))  # noqa: S314 - our own test payload
            message.send()
        await wait_for(lambda: len(self.reflected) >= wanted, timeout, "the reflections")


@asynccontextmanager
async def occupant(
    prosody: ProsodyServer,
    user: str,
    room: str,
    nick: str,
    *,
    config: Mapping[str, bool | int | str] | None = None,
) -> AsyncIterator[Occupant]:
    """`user` in `room` as `nick` (creating the room if it is new); `config` is
    submitted as the room's configuration (the user must own the room)."""
    session = Session(
        Endpoint(
            prosody.jid(user),
            PASSWORDS[user],
            prosody.host,
            prosody.c2s_port,
            str(prosody.ca_file),
        )
    )
    await session.start(wait=True)
    try:
        occupancy = await muc.join(session.client, room, nick, timeout=20)
        if config:
            known = await muc.get_config(session.client, room, timeout=20)
            await muc.submit_config(session.client, room, config, known=known, timeout=20)
        here = Occupant(session, room, nick, occupancy)

        def on_message(message: Any) -> None:
            if message["type"] == "groupchat" and str(message["from"]) == f"{room}/{nick}":
                here.reflected.append(message["id"])

        session.client.register_handler(
            Callback("reflections", MatchXPath("{jabber:client}message"), on_message)
        )
        yield here
    finally:
        await session.stop(goodbye=lambda: muc.leave(session.client, room, nick))


def reader(prosody: ProsodyServer, rooms: list[str], **options: Any) -> RCClient:
    """An `RCClient` for the ``reader`` account."""
    return RCClient(
        prosody.jid("reader"),
        PASSWORDS["reader"],
        rooms,
        host=prosody.host,
        port=prosody.c2s_port,
        ca_file=str(prosody.ca_file),
        **options,
    )


async def wait_for(
    condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


class Collector:
    """Reads a client's deliveries in a background task (the test's own consumer)."""

    def __init__(self, client: RCClient) -> None:
        self.client = client
        self.deliveries: list[Delivery] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async for delivery in self.client.deliveries():
            self.deliveries.append(delivery)

    def seen(self) -> list[tuple[str, str, str]]:
        """(room, stable id, title) of each delivery, in order."""
        return [(d.room, d.change.stable_id, d.change.title) for d in self.deliveries]

    async def wait_count(self, count: int, timeout: float = 30.0) -> None:
        await wait_for(
            lambda: len(self.deliveries) >= count,
            timeout,
            f"{count} changes (got {self.seen()})",
        )
