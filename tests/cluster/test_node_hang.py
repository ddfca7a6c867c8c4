"""A hung node (SIGSTOP) of a two-node ejabberd cluster under a running bridge.

Node 1 is the node the bridge is connected to and the one hosting the rooms
(the bridge made them there). It is frozen in the middle of a stream of
changes: its sockets stay open, the kernel still accepts connections for it,
nothing answers. The other node declares it down after Erlang's
``net_ticktime`` (set to :data:`NET_TICKTIME` here; 60 s by default, and
until then anything addressed to a room registered on node 1 hangs). What
this test holds the product to:

- node 2 declares node 1 down (``list_cluster`` drops it): the harness's
  ``net_ticktime`` took effect;
- the bridge notices that neither its rooms nor its server answer, moves to
  node 2, rejoins its rooms there (ejabberd restarts the persistent rooms on
  node 2 once node 1 is declared down) and resends what node 1 never
  confirmed, and sets nothing aside (``udp2xmpp_dropped_total`` stays 0);
- the reader connected to node 2 alone (the survivor) keeps its connection:
  its self-ping of a room on the hung node gets no answer, but its server
  answers, so only that room is rejoined (``session.connections`` stays 1);
- the reader connected to node 1 (with node 2 as alternate) moves to node 2;
- both readers end with every change the bridge accepted, each once, in order
  per wiki, and no gap event (the archive is replicated: node 2's copy has
  everything archived before the freeze, the rest is resent);
- once node 1 is thawed it stays partitioned (each node lists only itself,
  Mnesia reports ``inconsistent_database``): it is restarted (kill, start), it
  loads its tables from node 2, the cluster has both members again, the
  archive reads the same through either node, and changes published after
  the restart reach both readers as before.

Timings (freeze to the bridge confirming again, to each reader's next change)
are printed (``pytest -s``), not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from harness.ejabberd import EjabberdCluster, EjabberdServer
from rcclient import Delivery
from tests.cluster.test_node_loss import (
    WIKIS,
    BridgeProcess,
    Seen,
    change,
    every_change,
    exactly_once_in_order,
    reader,
    reading,
    running_bridge,
    settle,
    table_copies,
    watch_bridge,
)
from tests.helpers import archived_change_ids, wait_for
from xmlrc.wire import RecentChange
from xmlrc_emitter import Emitter

#: Erlang's net_ticktime on both nodes: node 2 declares the hung node down after
#: 8 to 10 s (60 to 75 s with Erlang's default, too long for a test).
NET_TICKTIME = 8
#: Seconds between datagrams (the two wikis alternate), and after how many the
#: bridge's node is frozen.
SEND_INTERVAL = 0.1
FREEZE_AFTER = 40
#: Changes sent once the bridge confirms through node 2 again (live ones, after
#: the recovery), and after node 1's restart.
TAIL = 20
AFTER_RESTART = 10
#: The stream stops this long after the freeze at the latest, recovered or not
#: (the assertions then say what did not recover).
STREAM_LIMIT = 75.0
# The readers come from test_node_loss.reader: ping_interval 3 s (rcclient's
# default is 60 s), ping_timeout 5 s, iq_timeout 20 s (the default). The short
# ping interval is what makes the readers notice the hang at all within the
# test: a reader on the hung node finds out by its keepalive (a server ping every
# ping_interval, no answer within ping_timeout), a reader on the survivor by its
# next self-ping of the room (the room just goes silent; nothing else tells it).
# With the default, each would wait up to a minute before noticing.


#: Which reader a log record of rcclient or xmlrc.xmpp comes from: set before each
#: reader connects, so its tasks (which copy the context they are made in) carry it.
WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="test")


class _Who(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.who = WHO.get()
        return True


def nth_change(n: int) -> RecentChange:
    """The `n`-th change sent: the wikis alternate, rcids rise per wiki."""
    return change(WIKIS[n % len(WIKIS)], 1000 + n // len(WIKIS))


def confirming_through(
    samples: list[tuple[float, dict[str, Any]]], node: EjabberdServer, confirmed: float
) -> float | None:
    """When the bridge first was on `node` with both rooms and had confirmed more
    than `confirmed` changes (monotonic time), or None."""
    address = f"{node.host}:{node.c2s_port}"
    for t, sample in samples:
        if (
            sample.get("xmpp_server") == address
            and sample.get("status") == "ok"
            and sample.get("rooms") == len(WIKIS)
            and sample.get("udp2xmpp_xmpp_confirmed_total", 0.0) > confirmed
        ):
            return t
    return None


async def test_the_bridge_and_its_readers_get_past_a_hung_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("rcclient", "xmlrc"):
        caplog.set_level(logging.INFO, logger=name)
    # On the handler: a logger's filters do not see its children's records.
    caplog.handler.addFilter(_Who())
    cluster = EjabberdCluster(
        mam=True, room_creators=("rcbot@localhost",), net_ticktime=NET_TICKTIME
    )
    began = time.monotonic()
    try:
        for node in cluster.nodes:
            # ejabberd's own option (it sets the tick time at startup, with Erlang's 60 s
            # transition) and the VM's, so that it holds from the VM's start.
            assert (
                f"net_ticktime: {NET_TICKTIME}\n" in (node.directory / "ejabberd.yml").read_text()
            )
            ctl = (node.directory / "ejabberdctl.cfg").read_text()
            assert f"-kernel net_ticktime {NET_TICKTIME}" in ctl
        await asyncio.to_thread(cluster.start)
        print(f"\nnode hang: the cluster started in {time.monotonic() - began:.1f} s")
        # intruder/intruderpass: the account tests.helpers.archived_stable_ids reads as.
        for user in ("rcbot", "reader1", "reader2", "intruder"):
            await asyncio.to_thread(cluster.add_user, user, f"{user}pass")
        await run_node_hang(tmp_path, cluster, caplog)
    except BaseException:
        print(cluster.log_text()[-20000:])
        raise
    finally:
        await asyncio.to_thread(cluster.cleanup)
        print(f"node hang: the whole test took {time.monotonic() - began:.1f} s")
    assert not cluster.running


async def run_node_hang(
    tmp_path: Path, cluster: EjabberdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    hung, survivor = cluster.nodes
    sent: list[RecentChange] = []
    samples: list[tuple[float, dict[str, Any]]] = []
    async with running_bridge(tmp_path, cluster) as bridge:
        # The rooms exist now, made through node 1 alone: their processes run there.
        assert await asyncio.to_thread(cluster.node_of, cluster.jid("rcbot")) is hung
        moved = Seen("reader of the hung node, which moves")
        stayed = Seen("reader of the surviving node alone")
        async with contextlib.AsyncExitStack() as readers:
            WHO.set("moving reader")
            first = await readers.enter_async_context(
                reading(reader(cluster, "reader1", hung, survivor), moved)
            )
            WHO.set("survivor's reader")
            second = await readers.enter_async_context(
                reading(reader(cluster, "reader2", survivor, None), stayed)
            )
            WHO.set("test")
            sessions = await asyncio.to_thread(survivor.sessions)
            assert sessions[first.session.own_jid] == hung.node
            assert sessions[second.session.own_jid] == survivor.node

            watcher = asyncio.create_task(watch_bridge(bridge, samples))
            frozen_at = frozen_wall = 0.0
            declared: asyncio.Task[float] | None = None
            confirmed_at_freeze = 0.0
            try:
                with Emitter("127.0.0.1", bridge.udp_port) as emitter:
                    tail_from: int | None = None
                    for n in range(100_000):
                        if n == FREEZE_AFTER:
                            confirmed_at_freeze = (samples[-1][1] if samples else {}).get(
                                "udp2xmpp_xmpp_confirmed_total", 0
                            )
                            await asyncio.to_thread(hung.freeze)
                            frozen_at, frozen_wall = time.monotonic(), time.time()
                            declared = asyncio.create_task(declared_down(survivor, hung))
                        if frozen_at:
                            if tail_from is None and confirming_through(
                                samples, survivor, confirmed_at_freeze
                            ):
                                tail_from = n
                            if (tail_from is not None and n >= tail_from + TAIL) or (
                                time.monotonic() - frozen_at > STREAM_LIMIT
                            ):
                                break
                        item = nth_change(n)
                        sent.append(item)
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
                if declared is not None and not declared.done():
                    declared.cancel()
                    await asyncio.gather(declared, return_exceptions=True)
            back = confirming_through(samples, survivor, confirmed_at_freeze)
            report(frozen_at, frozen_wall, sent_at, back, samples, (moved, stayed), bridge, caplog)

            # net_ticktime took effect: node 2 declared the hung node down (the time is
            # printed; Erlang's 60 s default would take 60 to 75 s).
            assert declared is not None and declared.done() and not declared.cancelled()
            print(
                f"node 2 dropped node 1 from list_cluster {declared.result() - frozen_at:.2f} s "
                f"after the freeze (net_ticktime {NET_TICKTIME} s)"
            )
            for line in survivor.log_text().splitlines():
                if "not responding" in line and hung.node in line:
                    print("node 2's log:", line.strip())
                    break

            # The bridge moved to node 2 and lost nothing.
            health = await bridge.health()
            assert health["status"] == "ok" and health["rooms"] == len(WIKIS), health
            assert health["xmpp_server"] == f"{survivor.host}:{survivor.c2s_port}"
            sessions = await asyncio.to_thread(survivor.sessions)
            assert {
                name for jid, name in sessions.items() if jid.startswith(cluster.jid("rcbot"))
            } == {survivor.node}
            metrics = await bridge.metrics()
            assert metrics.get("udp2xmpp_dropped_total", 0) == 0, metrics
            assert metrics["udp2xmpp_published_total"] >= len(sent)
            # One new connection (to node 2) and it kept it: no second move.
            assert metrics["udp2xmpp_xmpp_connections_total"] == 2, metrics
            assert back is not None

            # Both readers: every change, once, in order per wiki, no gap. The survivor's
            # reader kept its one connection; the other moved to node 2.
            for seen in (moved, stayed):
                exactly_once_in_order(seen, sent)
            assert second.session.connections == 1
            assert first.session.connections == 2
            assert sessions[first.session.own_jid] == survivor.node
            assert sessions[second.session.own_jid] == survivor.node

            # Node 1 thawed: declared down meanwhile, it stays apart (Mnesia does not
            # merge the two halves). Restarted, it loads its tables from node 2.
            await asyncio.to_thread(hung.thaw)
            thawed = time.monotonic()
            await wait_for(
                lambda: "inconsistent_database" in hung.log_text(),
                30,
                "Mnesia's inconsistent_database on the thawed node",
            )
            assert await asyncio.to_thread(hung.cluster_members) == [hung.node]
            assert await asyncio.to_thread(survivor.cluster_members) == [survivor.node]
            split = time.monotonic() - thawed
            apart = {}
            for wiki in WIKIS:
                room = cluster.room_jid(wiki)
                apart[wiki] = (
                    len(await archived_change_ids(hung, room)),
                    len(await archived_change_ids(survivor, room)),
                )
            restart = time.monotonic()
            await asyncio.to_thread(hung.kill)
            await asyncio.to_thread(hung.start)
            members = await asyncio.to_thread(cluster.wait_members)
            back = time.monotonic()
            assert members == sorted([hung.node, survivor.node])
            for node in cluster.nodes:
                assert sorted(node.cluster_members()) == members
                assert table_copies(node, "archive_msg", "disc_only_copies") == set(members)
            print(
                f"thawed node: inconsistent_database logged {split:.2f} s after the thaw; "
                f"archived messages per room (through the thawed node, through node 2) "
                f"while apart: {apart}; after its restart it was back in the cluster "
                f"{back - restart:.2f} s after the restart began"
            )

            # Restarting node 1 disturbs nothing running on node 2: more changes reach
            # both readers, and the archive reads the same through either node.
            with Emitter("127.0.0.1", bridge.udp_port) as emitter:
                for n in range(len(sent), len(sent) + AFTER_RESTART):
                    item = nth_change(n)
                    sent.append(item)
                    emitter.send(item)
                    await asyncio.sleep(SEND_INTERVAL)
            await settle(bridge, len(sent))
            for seen in (moved, stayed):
                await every_change(seen, len(sent))
            await asyncio.sleep(1.0)
            for seen in (moved, stayed):
                exactly_once_in_order(seen, sent)
            assert (first.session.connections, second.session.connections) == (2, 1)
            for wiki in WIKIS:
                room = cluster.room_jid(wiki)
                through_restarted = await archived_change_ids(hung, room)
                assert through_restarted == await archived_change_ids(survivor, room)
                assert set(through_restarted) == {c.stable_id for c in sent if c.wiki == wiki}


async def declared_down(survivor: EjabberdServer, hung: EjabberdServer) -> float:
    """When `survivor`'s ``list_cluster`` no longer lists `hung` (monotonic time)."""
    for _ in range(100_000):
        if hung.node not in await asyncio.to_thread(survivor.cluster_members):
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise AssertionError(f"{survivor.node} never dropped {hung.node}")


def report(
    frozen_at: float,
    frozen_wall: float,
    sent_at: float,
    back: float | None,
    samples: list[tuple[float, dict[str, Any]]],
    readers: tuple[Seen, ...],
    bridge: BridgeProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Print what was measured (pytest -s shows it), in seconds from the freeze."""
    before = [s for t, s in samples if t < frozen_at]
    after = [(t - frozen_at, s) for t, s in samples if t >= frozen_at]
    at_freeze = before[-1] if before else {}
    print(f"\nnode hang: the stream ended {sent_at - frozen_at:.2f} s after the freeze")

    def first(what: str, test: Any) -> None:
        found = next((t for t, s in after if test(s)), None)
        print(f"bridge: {what} {'never' if found is None else f'{found:.2f} s after the freeze'}")

    def more(key: str) -> Any:
        return lambda s: s.get(key, 0.0) > at_freeze.get(key, 0.0)

    first("healthz not ok", lambda s: s.get("status") != "ok")
    first("a new connection", more("udp2xmpp_xmpp_connections_total"))
    first("rejoined a room", more("udp2xmpp_xmpp_joins_total"))
    print(
        "bridge: confirming again through node 2 "
        + ("never" if back is None else f"{back - frozen_at:.2f} s after the freeze")
    )
    pending = [(t, s.get("pending", 0)) for t, s in after]
    peak = max((p for _t, p in pending), default=0)
    # After a connection loss the bridge resends what was outstanding one change at a
    # time, each confirmed before the next: after a hang that is everything it wrote
    # into the hung node's socket.
    drained = next(
        (t for t, p in pending if back is not None and t > back - frozen_at and not p), None
    )
    print(
        f"bridge: {peak} changes pending at most; none pending again "
        + ("never" if drained is None else f"{drained:.2f} s after the freeze")
    )
    wanted = ("accepted", "published", "confirmed", "resent", "joins", "connections", "dropped")
    final = samples[-1][1] if samples else {}
    print(
        "bridge counters:",
        {k: v for k, v in final.items() if any(w in k for w in wanted) and "http" not in k},
    )
    for seen in readers:
        times = [t for t, _e in seen.events]
        later = [t for t in times if t >= frozen_at]
        next_after = f"{later[0] - frozen_at:.2f}" if later else None
        replayed = sum(1 for d in seen.deliveries if d.replayed)
        live_after = [
            t - frozen_at
            for t, e in seen.events
            if t >= frozen_at and isinstance(e, Delivery) and not e.replayed
        ]
        last = f"{times[-1] - frozen_at:.2f}" if later else None
        per_wiki = {
            wiki: next(
                (
                    round(t - frozen_at, 2)
                    for t, e in seen.events
                    if t >= frozen_at and isinstance(e, Delivery) and e.change.wiki == wiki
                ),
                None,
            )
            for wiki in WIKIS
        }
        print(
            f"{seen.name}: {len(times) - len(later)} before the freeze, the next {next_after} "
            f"s after it (the next live one "
            f"{f'{live_after[0]:.2f}' if live_after else None} s, the last {last} s), "
            f"{replayed} of {len(seen.deliveries)} from the archive, {len(seen.gaps)} gaps, "
            f"{seen.client.duplicates if seen.client else None} duplicates dropped, "
            f"{seen.client.connections if seen.client else None} connections; the next "
            f"change of each wiki, in s after the freeze: {per_wiki}"
        )
    for record in caplog.records:
        if record.name.startswith(("rcclient", "xmlrc")) and record.created >= frozen_wall:
            who = getattr(record, "who", "?")
            print(f"{who} log +{record.created - frozen_wall:.2f} s: {record.getMessage()}")
    for line in bridge.log_lines():
        if line.get("level", "").lower() in ("warning", "error") or "joined" in str(line):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                print("bridge log:", json.dumps(line)[:400])
