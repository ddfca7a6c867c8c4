"""A bridge pair against a real Prosody: two udp2xmpp processes (their own accounts and
state) receive every change; one publishes. SIGKILL the publisher mid-stream: the other
takes over, and the room holds every change once, in order. The killed one comes back
and stands by. The logic alone, without sockets: test_pair_memory.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.ejabberd import EjabberdServer
from harness.prosody import ProsodyServer
from tests.e2e.test_cli import free_udp_port
from tests.helpers import archived_change_ids, wait_for
from xmlrc.wire import RecentChange
from xmlrc.wire.rcxml import changes_in_message
from xmlrc.xmpp import Endpoint, Session, muc
from xmlrc_emitter import Emitter

BIN = Path(sys.executable).parent
WIKI = "pairwiki"


Server = ProsodyServer | EjabberdServer


@pytest.fixture(params=["prosody", "ejabberd"])
def server(
    request: pytest.FixtureRequest, prosody_factory: Callable[..., ProsodyServer]
) -> Iterator[Server]:
    """A fresh server of each kind with the pair's accounts (pair-a sorts first: it
    creates the rooms), the observer's and the archive reader's."""
    users = {"pair-a": "pair-a-pass", "pair-b": "pair-b-pass"}
    if request.param == "prosody":
        prosody = prosody_factory()
        for user, password in users.items():
            prosody.add_user(user, password)
        yield prosody
        return
    with EjabberdServer(mam=True) as ejabberd:
        users |= {"reader": "readerpass", "intruder": "intruderpass"}
        for user, password in users.items():
            ejabberd.add_user(user, password)
        yield ejabberd


def pair_toml(prosody: ProsodyServer, user: str, peer: str, udp_port: int, pair: str = "") -> str:
    return f"""
[xmpp]
jid = "{prosody.jid(user)}"
password_env = "TEST_BRIDGE_PASSWORD"
host = "{prosody.host}"
port = {prosody.c2s_port}
ca_file = "{prosody.ca_file}"
[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{prosody.muc_domain}"
nick = "rcbot"
wikis = ["{WIKI}"]
[pair]
peers = ["{prosody.jid(peer)}"]
{pair}"""


def change(rcid: int) -> RecentChange:
    return RecentChange(
        wiki=WIKI,
        type="edit",
        ns=0,
        title=f"Page {rcid}",
        user="Alice",
        timestamp=datetime.now(UTC).replace(microsecond=0),
        rcid=rcid,
        comment=f"change {rcid}",
    )


class BridgeProcess:
    """One bridge of the pair, run as an operator runs it; its log in a file."""

    def __init__(self, directory: Path, name: str, toml: str, password: str) -> None:
        self.config = directory / f"{name}.toml"
        self.config.write_text(toml)
        self.log = directory / f"{name}.log"
        self.password = password
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(BIN / "udp2xmpp"), "--log-format", "text", "--config", str(self.config),
                stdout=log, stderr=log,
                env={**os.environ, "TEST_BRIDGE_PASSWORD": self.password},
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()


class Observer:
    """A plain occupant of the room recording every change posted, duplicates kept."""

    def __init__(self, prosody: Server, room: str) -> None:
        self.room = room
        self.ids: list[str] = []
        self.times: list[float] = []
        endpoint = Endpoint(
            prosody.jid("reader"), "readerpass", prosody.host, prosody.c2s_port,
            str(prosody.ca_file),
        )  # fmt: skip
        self.session = Session(endpoint)
        self.session.client.add_event_handler("message", self._on_message)

    def _on_message(self, message: Any) -> None:
        sender = message["from"]
        if message["type"] != "groupchat" or str(sender.bare) != self.room:
            return
        if sender.resource != "rcbot":
            return
        for found in changes_in_message(message.xml):
            self.ids.append(found.stable_id)
            self.times.append(time.monotonic())

    async def start(self) -> None:
        await self.session.start(wait=True)
        await muc.join(self.session.client, self.room, "observer", timeout=20)

    def count(self, stable_id: str) -> Callable[[], bool]:
        return lambda: stable_id in self.ids


async def test_the_standby_takes_over_when_the_publisher_is_killed_nothing_lost_or_doubled(
    tmp_path: Path, server: Server
) -> None:
    prosody = server
    room = f"{WIKI}@{prosody.muc_domain}"
    ports = {"a": free_udp_port(), "b": free_udp_port()}
    first = BridgeProcess(
        tmp_path, "a", pair_toml(prosody, "pair-a", "pair-b", ports["a"]), "pair-a-pass"
    )
    second = BridgeProcess(
        tmp_path, "b", pair_toml(prosody, "pair-b", "pair-a", ports["b"]), "pair-b-pass"
    )
    observer = Observer(prosody, room)
    emitters = {name: Emitter("127.0.0.1", port) for name, port in ports.items()}
    restarted: BridgeProcess | None = None

    def send(rcid: int, *to: str) -> None:
        # MediaWiki with two $wgRCFeeds entries: every change to both bridges.
        for name in to:
            emitters[name].send(change(rcid))

    try:
        await first.start()
        await wait_for(lambda: f"joined {room}" in first.text(), 30, "the first bridge")
        await second.start()
        await wait_for(
            lambda: f"standing by in {room}" in second.text(), 30, "the second to stand by"
        )
        await observer.start()

        for rcid in range(1, 201):
            send(rcid, "a", "b")
            if rcid % 20 == 0:
                await asyncio.sleep(0.01)  # a steady stream, not one burst
        await wait_for(observer.count(f"{WIKI}/150"), 30, "the first bridge to publish")
        killed_at = time.monotonic()
        await first.kill()  # in the middle of the stream: some of it still unsent
        for rcid in range(201, 301):
            send(rcid, "b")
        await wait_for(observer.count(f"{WIKI}/300"), 30, "the second bridge to take over")
        assert "took over publishing in " + room in second.text(), second.text()[-3000:]
        # The first change sent after the kill: only the standby had it.
        takeover_seconds = observer.times[observer.ids.index(f"{WIKI}/201")] - killed_at

        # The first comes back (same account, same config) and stands by.
        restarted = BridgeProcess(
            tmp_path, "a-again", pair_toml(prosody, "pair-a", "pair-b", ports["a"]), "pair-a-pass"
        )
        await restarted.start()
        await wait_for(
            lambda: f"standing by in {room}" in restarted.text() if restarted else False,
            30,
            "the restarted bridge to stand by",
        )
        for rcid in range(301, 351):
            send(rcid, "a", "b")
        await wait_for(observer.count(f"{WIKI}/350"), 30, "changes after the restart")
        await asyncio.sleep(1.0)  # room for a duplicate to show

        expected = [f"{WIKI}/{rcid}" for rcid in range(1, 351)]
        assert observer.ids == expected, (
            f"doubled: {sorted({i for i in observer.ids if observer.ids.count(i) > 1})}, "
            f"missing: {sorted(set(expected) - set(observer.ids))}"
        )
        assert await archived_change_ids(prosody, room) == expected
        assert "took over" not in restarted.text()
        print(f"take-over: the first change sent after SIGKILL read {takeover_seconds:.3f} s on")
    finally:
        for emitter in emitters.values():
            emitter.close()
        with contextlib.suppress(Exception):
            await observer.session.stop()
        for bridge in (first, second, restarted):
            if bridge is not None:
                await bridge.kill()


async def test_only_the_first_bridge_of_a_pair_creates_rooms(
    tmp_path: Path, prosody_factory: Callable[..., ProsodyServer]
) -> None:
    """Started first, the second bridge (by JID order) waits for the room instead of
    creating it: on a cluster two creations through two nodes can split a room."""
    prosody = prosody_factory()
    for user in ("pair-a", "pair-b"):  # pair-a sorts first: it creates the rooms
        prosody.add_user(user, f"{user}-pass")
    room = f"{WIKI}@{prosody.muc_domain}"
    ports = free_udp_port(), free_udp_port()
    second = BridgeProcess(
        tmp_path, "b", pair_toml(prosody, "pair-b", "pair-a", ports[1]), "pair-b-pass"
    )
    first = BridgeProcess(
        tmp_path, "a", pair_toml(prosody, "pair-a", "pair-b", ports[0]), "pair-a-pass"
    )
    try:
        await second.start()
        await wait_for(
            lambda: f"{room} does not exist yet" in second.text(), 30, "the second to wait"
        )
        assert "joined" not in second.text() and "standing by" not in second.text()
        await first.start()
        await wait_for(lambda: f"joined {room}" in first.text(), 30, "the first to create it")
        await wait_for(
            lambda: f"standing by in {room}" in second.text(), 60, "the second to stand by"
        )
    finally:
        for bridge in (first, second):
            await bridge.kill()


async def test_a_publisher_whose_machine_hangs_is_fenced_out_and_comes_back_as_standby(
    tmp_path: Path, server: Server
) -> None:
    """SIGSTOP: the publisher's TCP connection stays open (its kernel still acknowledges),
    as for a machine that froze, so the server keeps its nick. The standby's pings through
    the room go unanswered; it bans the publisher's account from the room, takes over,
    and makes it an owner again. Woken (SIGCONT), the old publisher finds itself out of
    the room, its late messages refused by the server, and stands by."""
    prosody = server
    room = f"{WIKI}@{prosody.muc_domain}"
    ports = {"a": free_udp_port(), "b": free_udp_port()}
    quick = "check_interval = 1.0\ncheck_misses = 2\n"
    first = BridgeProcess(
        tmp_path, "a", pair_toml(prosody, "pair-a", "pair-b", ports["a"], quick), "pair-a-pass"
    )
    second = BridgeProcess(
        tmp_path, "b", pair_toml(prosody, "pair-b", "pair-a", ports["b"], quick), "pair-b-pass"
    )
    observer = Observer(prosody, room)
    emitters = {name: Emitter("127.0.0.1", port) for name, port in ports.items()}

    def send(rcids: range) -> None:
        for rcid in rcids:
            for emitter in emitters.values():
                emitter.send(change(rcid))

    try:
        await first.start()
        await wait_for(lambda: f"joined {room}" in first.text(), 30, "the first bridge")
        await second.start()
        await wait_for(lambda: f"standing by in {room}" in second.text(), 30, "standing by")
        await observer.start()
        send(range(1, 101))
        await wait_for(observer.count(f"{WIKI}/100"), 30, "the first bridge to publish")

        assert first.process is not None
        first.process.send_signal(signal.SIGSTOP)  # hung: connected, silent
        stopped_at = time.monotonic()
        send(range(101, 151))  # both still "receive" (the hung one's kernel buffers them)
        await wait_for(observer.count(f"{WIKI}/150"), 60, "the standby to fence and take over")
        took = observer.times[observer.ids.index(f"{WIKI}/101")] - stopped_at
        assert "banning it from the room" in second.text()
        assert "took over publishing in " + room in second.text()

        first.process.send_signal(signal.SIGCONT)
        await wait_for(
            lambda: f"standing by in {room}" in first.text(), 60, "the old publisher to stand by"
        )
        send(range(151, 201))
        await wait_for(observer.count(f"{WIKI}/200"), 30, "changes after it came back")
        await asyncio.sleep(1.0)  # room for a duplicate to show

        expected = [f"{WIKI}/{rcid}" for rcid in range(1, 201)]
        assert observer.ids == expected, (
            f"doubled: {sorted({i for i in observer.ids if observer.ids.count(i) > 1})}, "
            f"missing: {sorted(set(expected) - set(observer.ids))}"
        )
        assert await archived_change_ids(prosody, room) == expected
        print(f"fenced and taken over: the first change after SIGSTOP read {took:.2f} s on")
    finally:
        for emitter in emitters.values():
            emitter.close()
        with contextlib.suppress(Exception):
            await observer.session.stop()
        if first.process is not None and first.process.returncode is None:
            first.process.send_signal(signal.SIGCONT)
        for bridge in (first, second):
            await bridge.kill()
