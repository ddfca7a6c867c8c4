"""Losing a node of a two-node ejabberd cluster under a running bridge.

The bridge (``udp2xmpp`` as a process, ``[xmpp] servers`` naming both nodes)
publishes a stream of changes for two wikis; an rcclient reader sits on each
node. In the middle of the stream the node the bridge is connected to (which
is also the node hosting the rooms: the bridge created them there) is
SIGKILLed. What happens, and what this test holds the product to:

- the bridge's stream is closed by the kernel; it moves to the other node at
  once, rejoins its rooms (ejabberd has already restarted the persistent rooms
  there, empty) and resends what the dead node never confirmed;
- the reader on the surviving node is no longer an occupant (the room process
  died with the node, and nobody told it); its XEP-0410 self-ping finds out,
  it rejoins and catches up from the archive;
- the reader on the dead node reconnects to the other node and catches up
  from the archive, which Mnesia replicates to both nodes (``archive_msg``);
- both readers end with every change the bridge accepted, each once, in order
  per wiki, and no gap event (the archive lost nothing);
- a third reader, whose only server is the killed node, waits for it; the node,
  restarted, rejoins the cluster from its spool and serves the same archive, and
  that reader catches up from it, each change once.

The same again with the rooms made beforehand on the other node (so their
processes survive): the survivor's reader never leaves its rooms and gets
everything live; the bridge re-enters them beside its dead session's ghost
occupant, which ejabberd drops at the first message it cannot deliver to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.ejabberd import EjabberdCluster, EjabberdServer
from harness.prosody import ProsodyServer, _free_ports
from rcclient import Delivery, Gap, RCClient
from tests.e2e.test_cli import free_udp_port
from tests.helpers import archived_stable_ids, wait_for
from xmlrc.wire import RecentChange
from xmlrc_emitter import Emitter

BIN = Path(sys.executable).parent
WIKIS = ("alphawiki", "betawiki")
#: Changes sent per wiki, and after how many (of all) the bridge's node is killed.
PER_WIKI = 120
KILL_AFTER = 120
#: Seconds between datagrams: the stream lasts about 5 s, the kill in its middle.
SEND_INTERVAL = 0.02
#: The readers' self-ping (and keepalive) period: how soon a reader whose room
#: vanished notices (rcclient's default is 60 s).
READER_PING = 3.0


def change(wiki: str, rcid: int) -> RecentChange:
    return RecentChange(
        wiki=wiki,
        type="edit",
        ns=0,
        title=f"Page {rcid}",
        user="Alice",
        timestamp=datetime.now(UTC).replace(microsecond=0),
        rcid=rcid,
    )


def stream() -> list[RecentChange]:
    """The changes sent, the two wikis interleaved, rcids rising per wiki."""
    return [change(wiki, 1000 + n) for n in range(PER_WIKI) for wiki in WIKIS]


@dataclass
class Seen:
    """What one reader handed out: (monotonic time, event)."""

    name: str
    events: list[tuple[float, Delivery | Gap]] = field(default_factory=list)
    client: RCClient | None = None

    @property
    def deliveries(self) -> list[Delivery]:
        return [e for _t, e in self.events if isinstance(e, Delivery)]

    @property
    def gaps(self) -> list[Gap]:
        return [e for _t, e in self.events if isinstance(e, Gap)]

    def ids(self, wiki: str) -> list[str]:
        return [d.change.stable_id for d in self.deliveries if d.change.wiki == wiki]


@asynccontextmanager
async def reading(client: RCClient, seen: Seen) -> AsyncIterator[RCClient]:
    async def read() -> None:
        async for event in client.events():
            seen.events.append((time.monotonic(), event))

    seen.client = client
    async with client:
        task = asyncio.create_task(read())
        try:
            yield client
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def reader(
    cluster: EjabberdCluster, user: str, first: EjabberdServer, then: EjabberdServer | None
) -> RCClient:
    return RCClient(
        cluster.jid(user),
        f"{user}pass",
        [cluster.room_jid(wiki) for wiki in WIKIS],
        host=first.host,
        port=first.c2s_port,
        servers=[(then.host, then.c2s_port)] if then is not None else [],
        ca_file=str(cluster.ca_file),
        ping_interval=READER_PING,
        ping_timeout=5.0,
        reconnect_delay=0.5,
        reconnect_max_delay=2.0,
    )


def bridge_toml(cluster: EjabberdCluster, udp_port: int, http_port: int) -> str:
    servers = json.dumps([f"{host}:{port}" for host, port in cluster.servers])
    return f"""
[xmpp]
jid = "{cluster.jid("rcbot")}"
password_env = "TEST_BRIDGE_PASSWORD"
servers = {servers}
ca_file = "{cluster.ca_file}"
[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{cluster.muc_domain}"
wikis = {json.dumps(list(WIKIS))}
[http]
listen = "127.0.0.1:{http_port}"
[log]
format = "json"
"""


class BridgeProcess:
    """``udp2xmpp --config`` as a child process, and its HTTP listener."""

    def __init__(
        self, process: asyncio.subprocess.Process, log: Path, udp_port: int, http_port: int
    ) -> None:
        self.process = process
        self.udp_port = udp_port
        self.log = log
        self.base = f"http://127.0.0.1:{http_port}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def get(self, path: str) -> tuple[int, str]:
        async with self._http.get(self.base + path) as response:
            return response.status, await response.text()

    async def health(self) -> dict[str, Any]:
        _status, text = await self.get("/healthz")
        return dict(json.loads(text))

    async def metrics(self) -> dict[str, float]:
        """Each metric's total over its labels (``udp2xmpp_published_total`` ...)."""
        _status, text = await self.get("/metrics")
        totals: dict[str, float] = {}
        for line in text.splitlines():
            found = re.match(r"^(udp2xmpp_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
            if found:
                totals[found[1]] = totals.get(found[1], 0.0) + float(found[2])
        return totals

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._http.close()


@asynccontextmanager
async def running_bridge(tmp_path: Path, cluster: EjabberdCluster) -> AsyncIterator[BridgeProcess]:
    udp_port = free_udp_port()
    (http_port,) = _free_ports("127.0.0.1", 1)
    config = tmp_path / "bridge.toml"
    config.write_text(bridge_toml(cluster, udp_port, http_port))
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "udp2xmpp"), "--config", str(config), stdout=out, stderr=out,
            env={"TEST_BRIDGE_PASSWORD": "rcbotpass"},
        )  # fmt: skip
    bridge = BridgeProcess(process, log, udp_port, http_port)
    try:

        async def ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                health = await bridge.health()
                return bool(health["status"] == "ok" and health["rooms"] == len(WIKIS))
            return False

        deadline = time.monotonic() + 60
        while not await ready():
            assert process.returncode is None, log.read_text()
            assert time.monotonic() < deadline, "the bridge was not up within 60 s\n" + (
                log.read_text()
            )
            await asyncio.sleep(0.1)
        yield bridge
    finally:
        await bridge.close()


async def watch_bridge(bridge: BridgeProcess, samples: list[tuple[float, dict[str, Any]]]) -> None:
    """Sample /healthz and /metrics every 0.1 s (until cancelled)."""
    for _ in range(100_000):
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            health = await bridge.health()
            metrics = await bridge.metrics()
            samples.append((time.monotonic(), {**health, **metrics}))
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("rooms_on", ["the bridge's node", "the other node"])
async def test_the_bridge_and_its_readers_survive_losing_the_bridges_node(
    tmp_path: Path, rooms_on: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``rooms_on``: where the room processes run. The bridge's node, when the bridge
    made them (the rooms die with it); the other node, when they were made there
    before the bridge came (they live on, the bridge's old occupant a ghost in them)."""
    caplog.set_level(logging.INFO, logger="rcclient")
    cluster = EjabberdCluster(mam=True, room_creators=("rcbot@localhost",))
    try:
        await asyncio.to_thread(cluster.start)
        # intruder/intruderpass: the account tests.helpers.archived_stable_ids reads as.
        for user in ("rcbot", "reader1", "reader2", "reader3", "intruder"):
            await asyncio.to_thread(cluster.add_user, user, f"{user}pass")
        if rooms_on == "the other node":
            for wiki in WIKIS:
                await asyncio.to_thread(premade_room, cluster.nodes[1], wiki, cluster.jid("rcbot"))
        await run_node_loss(tmp_path, cluster, rooms_die=rooms_on == "the bridge's node")
        rejoined = {
            r.getMessage() for r in caplog.records if r.getMessage().startswith("no longer in")
        }
        if rooms_on == "the bridge's node":
            # Nothing told the survivor's reader that its rooms had gone: its self-ping did.
            assert rejoined == {f"no longer in {cluster.room_jid(w)}; rejoining" for w in WIKIS}
        else:
            assert rejoined == set()
    except BaseException:
        print(cluster.log_text()[-20000:])
        raise
    finally:
        await asyncio.to_thread(cluster.cleanup)


def premade_room(node: EjabberdServer, wiki: str, owner: str) -> None:
    """Make `wiki`'s room on `node` (its process runs there), owned by `owner`."""
    node.ctl("create_room", wiki, node.muc_domain, node.domain)
    node.ctl("set_room_affiliation", wiki, node.muc_domain, owner, "owner")


async def run_node_loss(tmp_path: Path, cluster: EjabberdCluster, *, rooms_die: bool) -> None:
    sent = stream()
    samples: list[tuple[float, dict[str, Any]]] = []
    async with running_bridge(tmp_path, cluster) as bridge:
        # The rooms exist now, made through one node alone (only the bridge may create
        # rooms): no reader can make a second copy through the other node.
        doomed = await asyncio.to_thread(cluster.node_of, cluster.jid("rcbot"))
        assert doomed is cluster.nodes[0], "the bridge starts on the first of its servers"
        survivor = cluster.nodes[1]
        health = await bridge.health()
        assert health["xmpp_server"] == f"{doomed.host}:{doomed.c2s_port}"

        moved = Seen("reader of the killed node, which moves")
        stayed = Seen("reader of the surviving node")
        waited = Seen("reader of the killed node alone, which waits for it")
        async with (
            reading(reader(cluster, "reader1", doomed, survivor), moved) as first,
            reading(reader(cluster, "reader2", survivor, doomed), stayed) as second,
            reading(reader(cluster, "reader3", doomed, None), waited) as third,
        ):
            sessions = await asyncio.to_thread(survivor.sessions)
            assert sessions[first.session.own_jid] == doomed.node
            assert sessions[second.session.own_jid] == survivor.node
            assert sessions[third.session.own_jid] == doomed.node

            watcher = asyncio.create_task(watch_bridge(bridge, samples))
            killed_at = 0.0
            try:
                with Emitter("127.0.0.1", bridge.udp_port) as emitter:
                    for n, item in enumerate(sent):
                        if n == KILL_AFTER:
                            await asyncio.to_thread(doomed.kill)
                            killed_at = time.monotonic()
                        emitter.send(item)
                        await asyncio.sleep(SEND_INTERVAL)
                sent_at = time.monotonic()
                await settle(bridge, len(sent))
                for seen in (moved, stayed):
                    await every_change(seen, len(sent))
                await asyncio.sleep(1.0)  # nothing more comes (no duplicates)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            report(killed_at, sent_at, samples, (moved, stayed, waited), bridge)

            # The bridge went on through the survivor, and lost nothing.
            health = await bridge.health()
            assert health["status"] == "ok" and health["rooms"] == len(WIKIS), health
            assert health["xmpp_server"] == f"{survivor.host}:{survivor.c2s_port}"
            assert await asyncio.to_thread(cluster.node_of, cluster.jid("rcbot")) is survivor
            metrics = await bridge.metrics()
            assert metrics.get("udp2xmpp_dropped_total", 0) == 0, metrics
            assert metrics["udp2xmpp_published_total"] >= len(sent)

            # The two readers with a node left: every change, once, in order per wiki,
            # and no gap; the one of the killed node is now on the survivor.
            for seen in (moved, stayed):
                exactly_once_in_order(seen, sent)
            sessions = await asyncio.to_thread(survivor.sessions)
            assert sessions[first.session.own_jid] == survivor.node
            assert sessions[second.session.own_jid] == survivor.node
            assert first.connections == 2 and second.connections == 1
            if not rooms_die:
                # The survivor's reader stayed in its rooms: everything came live.
                assert not any(d.replayed for d in stayed.deliveries)
            # The reader with no other server waits, the changes since the kill unseen.
            assert not third.connected
            assert len(waited.deliveries) < len(sent)

            # The archive, read through the survivor, holds every change (those stored
            # before the kill too; a resent change may be there twice).
            for wiki in WIKIS:
                archived = await archived_stable_ids(as_prosody(survivor), cluster.room_jid(wiki))
                assert set(archived) == {c.stable_id for c in sent if c.wiki == wiki}

            # The killed node, restarted, rejoins the cluster from its spool and serves
            # the same archive; the waiting reader comes back and catches up from it.
            restart = time.monotonic()
            await asyncio.to_thread(doomed.start)
            await asyncio.to_thread(cluster.wait_members)
            rejoined = time.monotonic()
            await every_change(waited, len(sent))
            await asyncio.sleep(1.0)
            exactly_once_in_order(waited, sent)
            replayed = [d for d in waited.deliveries if d.replayed]
            assert replayed and third.connections == 2
            back = next(t for t, e in waited.events if isinstance(e, Delivery) and e.replayed)
            print(
                f"killed node: up and in the cluster {rejoined - restart:.2f} s after its "
                f"restart began; the reader that waited for it had the first of its "
                f"{len(replayed)} changes from the archive {back - restart:.2f} s after it began"
            )
            for node in cluster.nodes:
                # The room archive is a Mnesia table with a copy on disc on every node.
                assert table_copies(node, "archive_msg", "disc_only_copies") == {
                    n.node for n in cluster.nodes
                }
            for wiki in WIKIS:
                room = cluster.room_jid(wiki)
                again = await archived_stable_ids(as_prosody(doomed), room)
                assert again == await archived_stable_ids(as_prosody(survivor), room)


def table_copies(node: EjabberdServer, table: str, kind: str) -> set[str]:
    """The nodes holding a `kind` copy of Mnesia `table`, as `node` sees it."""
    info = node.ctl("mnesia_table_info", table)
    found = re.search(rf"\{{{kind},\[([^\]]*)\]\}}", info)
    assert found, info
    return {name.strip().strip("'") for name in found[1].split(",") if name.strip()}


async def settle(bridge: BridgeProcess, count: int) -> None:
    """Wait until the bridge accepted `count` changes and has none unconfirmed."""
    deadline = time.monotonic() + 60
    for _ in range(1000):
        metrics = await bridge.metrics()
        health = await bridge.health()
        if metrics.get("udp2xmpp_changes_accepted_total") == count and health["pending"] == 0:
            return
        assert time.monotonic() < deadline, (
            f"the bridge did not confirm every change within 60 s: {health} {metrics}"
        )
        await asyncio.sleep(0.1)
    raise AssertionError("the bridge did not settle")


async def every_change(seen: Seen, count: int) -> None:
    await wait_for(
        lambda: len(seen.deliveries) >= count,
        60,
        f"every change at the {seen.name} (got {len(seen.deliveries)})",
    )


def exactly_once_in_order(seen: Seen, sent: list[RecentChange]) -> None:
    for wiki in WIKIS:
        want = [c.stable_id for c in sent if c.wiki == wiki]
        got = seen.ids(wiki)
        repeated = sorted({i for i in got if got.count(i) > 1})
        assert got == want, (
            f"{seen.name}, {wiki}: {len(got)} delivered of {len(want)}; missing "
            f"{sorted(set(want) - set(got))[:10]}, repeated {repeated[:10]}"
        )
    assert seen.gaps == [], f"{seen.name}: {seen.gaps}"
    assert seen.client is not None
    assert (seen.client.forged, seen.client.decode_errors) == (0, 0)


def as_prosody(node: EjabberdServer) -> ProsodyServer:
    """The archive helper is typed for Prosody; it uses only what both servers have."""
    return node  # type: ignore[return-value]


def report(
    killed_at: float,
    sent_at: float,
    samples: list[tuple[float, dict[str, Any]]],
    readers: tuple[Seen, ...],
    bridge: BridgeProcess,
) -> None:
    """Print what was measured (pytest -s shows it), in seconds from the kill."""
    after = [(t - killed_at, s) for t, s in samples if t >= killed_at]
    back = next((t for t, s in after if s.get("status") == "ok" and s.get("rooms") == 2), None)
    published = [s.get("udp2xmpp_published_total", 0.0) for _t, s in after]
    resumed = (
        next((t for t, s in after if s.get("udp2xmpp_published_total", 0.0) > published[0]), None)
        if published
        else None
    )
    print(f"\nnode loss: the stream ended {sent_at - killed_at:.2f} s after the kill")
    print(f"bridge: healthz ok with both rooms again {back} s after the kill")
    print(f"bridge: publishing again {resumed} s after the kill")
    final = samples[-1][1] if samples else {}
    wanted = ("accepted", "published", "confirmed", "resent", "joins", "connections", "dropped")
    print(
        "bridge counters:",
        {k: v for k, v in final.items() if any(w in k for w in wanted) and "http" not in k},
    )
    for seen in readers:
        times = [t for t, _e in seen.events]
        before = sum(1 for t in times if t < killed_at)
        later = [t for t in times if t >= killed_at]
        first_after = f"{later[0] - killed_at:.2f}" if later else None
        replayed = sum(1 for d in seen.deliveries if d.replayed)
        print(
            f"{seen.name}: {before} before the kill, the next {first_after} s after it, "
            f"{replayed} of {len(seen.deliveries)} from the archive, {len(seen.gaps)} gaps, "
            f"{seen.client.duplicates if seen.client else None} duplicates dropped"
        )
    for line in bridge.log_lines():
        if line.get("level", "").lower() in ("warning", "error") or "joined" in str(line):
            print("bridge log:", json.dumps(line)[:400])
