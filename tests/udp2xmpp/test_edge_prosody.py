"""The edge against real Prosody: who may send, signatures, the penalty box, IPv6.

Sources are told apart by the loopback address they send from (127.0.0.1,
127.0.0.2, ...: all of 127.0.0.0/8 is this machine on Linux).
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

from harness.prosody import ProsodyServer
from tests.fixtures import JSON_FEED_PORT, packets
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from xmlrc.wire import RecentChange, encode_datagram, sign
from xmlrc_emitter import Emitter

SECRET = "edge-test-secret-0123456789"


def change(wiki: str, rcid: int) -> RecentChange:
    return RecentChange(
        wiki=wiki, type="edit", ns=0, title=f"Page {rcid}", user="Edge",
        timestamp=datetime.now(UTC).replace(microsecond=0), rcid=rcid,
    )  # fmt: skip


def send_from(source: str, target: tuple[str, int], datagrams: list[bytes]) -> None:
    """Send `datagrams` from a socket bound to the loopback address `source`."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for data in datagrams:
            sock.sendto(data, target)


def signed(item: RecentChange, secret: str = SECRET, at: float | None = None) -> bytes:
    return sign(encode_datagram(item), secret, time.time() if at is None else at)


async def test_outsiders_and_unsigned_datagrams_are_refused_while_signed_traffic_flows(
    prosody: ProsodyServer,
) -> None:
    config = bridge_config(
        prosody,
        udp={
            "listen": ["127.0.0.1:0", "[::1]:0"],
            "allow": ["127.0.0.1/32", "::1/128"],
            "secret": SECRET,
            "require_signature": True,
        },
        rooms={"wikis": ["edgewiki"]},
    )
    bridge = await running_bridge(config)
    room = f"edgewiki@{prosody.muc_domain}"
    v4, v6 = bridge.addresses
    assert v6[0] == "::1"
    good = [change("edgewiki", rcid) for rcid in range(1, 7)]
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            replayed = signed(good[0])
            send_from("127.0.0.1", v4, [replayed])
            send_from("127.0.0.2", v4, [signed(change("edgewiki", 100))])  # not in udp.allow
            send_from("127.0.0.1", v4, [encode_datagram(change("edgewiki", 101))])  # unsigned
            send_from("127.0.0.1", v4, [signed(good[1])])
            wrong = signed(change("edgewiki", 102), secret="not-the-bridge-secret-0000")
            send_from("127.0.0.1", v4, [wrong])
            stale = signed(change("edgewiki", 103), at=time.time() - 3600)
            send_from("127.0.0.1", v4, [stale, replayed])
            with Emitter(*v4, secret=SECRET) as emitter:  # the emitter signs
                emitter.send(good[2])
                emitter.send(good[3])
            with Emitter("::1", v6[1], secret=SECRET) as emitter:  # IPv6 listener
                emitter.send(good[4])
                emitter.send_raw(encode_datagram(change("edgewiki", 104)))  # unsigned, over v6
            send_from("::1", v6[:2], [signed(good[5])])
            deliveries = await collect(client, len(good))
    finally:
        await bridge.stop()

    assert sorted(d.change.rcid or 0 for d in deliveries) == [1, 2, 3, 4, 5, 6]
    assert all(d.room == room for d in deliveries)
    assert bridge.stats.received == 12
    assert bridge.stats.rejected == {
        "not_allowed": 1,
        "unsigned": 2,
        "bad_signature": 1,
        "stale_signature": 1,
        "replayed": 1,
    }


async def test_unsigned_datagrams_pass_when_signatures_are_optional(
    prosody: ProsodyServer,
) -> None:
    config = bridge_config(
        prosody, udp={"secret": SECRET}, rooms={"wikis": ["optwiki"]}
    )  # require_signature off: MediaWiki (unsigned) and signed senders side by side
    bridge = await running_bridge(config)
    room = f"optwiki@{prosody.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            target = bridge.addresses[0]
            send_from("127.0.0.1", target, [encode_datagram(change("optwiki", 1))])
            send_from("127.0.0.1", target, [signed(change("optwiki", 2))])
            bad = signed(change("optwiki", 3), secret="not-the-bridge-secret-0000")
            send_from("127.0.0.1", target, [bad])  # a bad MAC is refused all the same
            deliveries = await collect(client, 2)
    finally:
        await bridge.stop()
    assert sorted(d.change.rcid or 0 for d in deliveries) == [1, 2]
    assert bridge.stats.rejected == {"bad_signature": 1}


async def test_a_flooding_source_goes_to_the_penalty_box_while_others_flow(
    prosody: ProsodyServer,
) -> None:
    # A budget of 30 datagrams, refilled so slowly (one per 100 s) that the test
    # sees exactly the burst whatever the machine's speed.
    config = bridge_config(
        prosody,
        udp={"rate_limit": {"per_source_rate": 0.01, "burst": 30, "penalty_seconds": 600}},
        rooms={"wikis": ["floodwiki"]},
    )
    bridge = await running_bridge(config)
    room = f"floodwiki@{prosody.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            target = bridge.addresses[0]
            flood = [encode_datagram(change("floodwiki", 1000 + i)) for i in range(100)]
            send_from("127.0.0.3", target, flood)
            await wait_for(lambda: bridge.stats.received == 100, what="the flood")
            assert bridge.edge.limiter is not None
            assert bridge.edge.limiter.in_penalty(time.monotonic()) == ["127.0.0.3"]
            # Another source is not affected; the flooder stays ignored.
            send_from(
                "127.0.0.1", target, [encode_datagram(change("floodwiki", i)) for i in range(10)]
            )
            send_from("127.0.0.3", target, [encode_datagram(change("floodwiki", 2000))])
            deliveries = await collect(client, 40)
    finally:
        await bridge.stop()
    rcids = sorted(d.change.rcid or 0 for d in deliveries)
    assert rcids == list(range(10)) + list(range(1000, 1030))
    assert bridge.stats.rejected == {"rate_limited": 71}
    assert bridge.edge.limiter.penalties == 1


async def test_hostile_but_decodable_datagrams_never_break_the_stream(
    prosody: ProsodyServer,
) -> None:
    """Characters XML 1.0 forbids (legal in JSON) would make the server close the
    bridge's stream: they arrive replaced; a wiki ID that could address another
    JID is refused. The connection stays the same one throughout."""
    config = bridge_config(prosody, rooms={"wikis": ["hostilewiki"]})
    bridge = await running_bridge(config)
    room = f"hostilewiki@{prosody.muc_domain}"
    base = json.loads(packets(JSON_FEED_PORT)[1])

    def feed(**fields: object) -> bytes:
        return json.dumps({**base, "wiki": "hostilewiki", **fields}).encode()

    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            target = bridge.addresses[0]
            send_from(
                "127.0.0.1",
                target,
                [
                    feed(
                        id=1, title="Bell\u0007 and \u001b[31mescape", comment="nul \u0000 \ud800"
                    ),
                    feed(id=2, wiki="x@evil.example/res"),
                    feed(id=3, wiki="hostile wiki"),
                    feed(id=4, title="Plain"),
                ],
            )
            deliveries = await collect(client, 2)
    finally:
        await bridge.stop()
    by_rcid = {d.change.rcid: d.change for d in deliveries}
    assert sorted(by_rcid) == [1, 4]
    assert by_rcid[1].title == "Bell\ufffd and \ufffd[31mescape"
    assert by_rcid[1].comment == "nul \ufffd \ufffd"
    assert bridge.stats.rejected == {"bad_wiki": 2}
    assert bridge.sink.stats.connections == 1  # the stream was never closed
