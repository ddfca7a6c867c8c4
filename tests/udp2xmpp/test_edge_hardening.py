"""The edge under attack: replays after a restart, junk from a signer's address.

Pure parts first (the replay state's format, merging, the state file shared by
two bridges), then the bridge on real Prosody with real datagrams on loopback.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from udp2xmpp.config import ConfigError, parse_config
from udp2xmpp.source.replaystate import ReplayStateFile
from xmlrc.wire import RecentChange, Rejection, RejectReason, SignatureChecker, encode_datagram
from xmlrc.wire.signing import (
    ReplayState,
    decode_replay_state,
    encode_replay_state,
    sign,
)

SECRET = "edge-hardening-secret-0123456789"
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def checker(max_recent: int = 100) -> SignatureChecker:
    return SignatureChecker(SECRET, window=300, max_recent=max_recent)


# -- the replay state, pure -----------------------------------------------------------


def test_replay_state_round_trips_and_refuses_damage() -> None:
    state = ReplayState(41, ((b"\x01" * 32, 1_700_000_000), (b"\x02" * 32, 1_700_000_001)))
    data = encode_replay_state(state)
    assert len(data) == len(encode_replay_state(ReplayState(41, ()))) + 2 * 40
    assert decode_replay_state(data) == state
    for bad in (b"", b"garbage", data[:-1], data + b"x", b"XMLRC-REPLAY v2\n" + data[16:]):
        with pytest.raises(ValueError, match="replay state"):
            decode_replay_state(bad)


def test_a_fresh_checker_merged_from_a_snapshot_refuses_the_replay() -> None:
    first = checker()
    datagram = sign(b"<rc/>", SECRET, NOW)
    assert first.check(datagram, NOW) == b"<rc/>"
    old = sign(b"<old/>", SECRET, NOW - 200)
    assert first.check(old, NOW) == b"<old/>"
    # After the restart, 150 s later: the old one is past the window, so not carried.
    later = NOW + 150
    second = checker()
    assert second.merge(first.snapshot(later), later) == 1
    refused = second.check(datagram, later)
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.REPLAYED
    assert second.check(sign(b"<other/>", SECRET, NOW), later) == b"<other/>"  # same second
    assert second.merge(first.snapshot(later), later) == 0  # nothing new twice


def test_merge_keeps_the_bound_and_raises_the_floor() -> None:
    small = checker(max_recent=3)
    entries = tuple((bytes([i]) * 32, int(NOW) - 10 + i) for i in range(5))
    assert small.merge(ReplayState(-1, entries), NOW) == 5
    assert len(small) == 3
    # The two oldest were forgotten for room: anything signed no later is stale.
    forgotten = sign(b"<x/>", SECRET, NOW - 9)
    refused = small.check(forgotten, NOW)
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.STALE_SIGNATURE
    assert small.snapshot(NOW).floor == int(NOW) - 9
    assert small.merge(ReplayState(int(NOW) - 5, ()), NOW) == 0
    assert small.snapshot(NOW).floor == int(NOW) - 5  # a floor is carried over as well


# -- the state file -------------------------------------------------------------------


def state_file(path: Path, signatures: SignatureChecker, mono: Clock) -> ReplayStateFile:
    return ReplayStateFile(path, signatures, wall=Clock(NOW), monotonic=mono)


def test_the_first_accept_is_written_at_once_then_at_most_once_per_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replay"
    signatures, mono = checker(), Clock(10.0)
    store = state_file(path, signatures, mono)
    assert store.load() == 0 and not path.exists()  # first start: nothing to read
    assert signatures.check(sign(b"<a/>", SECRET, NOW), NOW) == b"<a/>"
    store.note_accepted()
    assert store.writes == 1 and not store.pending and path.exists()
    assert signatures.check(sign(b"<b/>", SECRET, NOW), NOW) == b"<b/>"
    store.note_accepted()  # within the second, no loop here: left for later
    assert store.writes == 1 and store.pending
    mono.now += 1.0
    assert signatures.check(sign(b"<c/>", SECRET, NOW), NOW) == b"<c/>"
    store.note_accepted()
    assert store.writes == 2 and not store.pending
    assert len(decode_replay_state(path.read_bytes()).entries) == 3
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_write_due_later_happens_without_more_traffic(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    signatures = checker()
    store = ReplayStateFile(path, signatures, interval=0.2, wall=Clock(NOW))
    for payload in (b"<a/>", b"<b/>"):
        assert signatures.check(sign(payload, SECRET, NOW), NOW) == payload
        store.note_accepted()
    assert store.writes == 1 and store.pending
    await wait_for(lambda: not store.pending, timeout=20, what="the later write")
    assert len(decode_replay_state(path.read_bytes()).entries) == 2


def test_two_bridges_sharing_the_file_learn_each_others_signatures(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    old, new = checker(), checker()
    mono = Clock(10.0)
    old_store, new_store = state_file(path, old, mono), state_file(path, new, mono)
    first, second = sign(b"<1/>", SECRET, NOW), sign(b"<2/>", SECRET, NOW)
    assert old.check(first, NOW) == b"<1/>"
    old_store.note_accepted()
    assert new_store.load() == 1  # the new bridge starts: it knows what the old one took
    assert new.check(second, NOW) == b"<2/>"
    new_store.note_accepted()  # its write merges and keeps the old one's
    mono.now += 1.0
    assert old.check(sign(b"<3/>", SECRET, NOW), NOW) == b"<3/>"
    old_store.note_accepted()  # reads the new one's news before writing
    refused = old.check(second, NOW)
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.REPLAYED
    assert len(decode_replay_state(path.read_bytes()).entries) == 3


def test_a_damaged_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "replay"
    path.write_bytes(b"XMLRC-REPLAY v1\n\x00\x00")
    signatures = checker()
    store = state_file(path, signatures, Clock(0.0))
    with caplog.at_level(logging.WARNING):
        assert store.load() == 0
    assert "ignored" in caplog.text
    assert signatures.check(sign(b"<a/>", SECRET, NOW), NOW) == b"<a/>"
    store.note_accepted()  # and replaced by a good one
    assert len(decode_replay_state(path.read_bytes()).entries) == 1


def config(tmp_path: Path, **udp: Any) -> Any:
    return parse_config(
        {
            "xmpp": {"jid": "rcbot@localhost", "password": "x"},
            "udp": udp,
            "rooms": {"service": "conference.localhost"},
        },
        base_dir=tmp_path,
    )


def test_replay_state_file_key(tmp_path: Path) -> None:
    assert config(tmp_path).udp.replay_state_file is None  # default: memory only
    udp = config(tmp_path, secret=SECRET, replay_state_file="replay").udp
    assert udp.replay_state_file == str(tmp_path.resolve() / "replay")
    with pytest.raises(ConfigError, match=r"^udp.replay_state_file: needs udp.secret"):
        config(tmp_path, replay_state_file="replay")
    with pytest.raises(ConfigError, match=r"^udp.replay_state_file: no such directory"):
        config(tmp_path, secret=SECRET, replay_state_file="missing/replay")


# -- the bridge, on real Prosody --------------------------------------------------------


def change(wiki: str, rcid: int) -> RecentChange:
    return RecentChange(
        wiki=wiki, type="edit", ns=0, title=f"Page {rcid}", user="Edge",
        timestamp=datetime.now(UTC).replace(microsecond=0), rcid=rcid,
    )  # fmt: skip


def send(target: tuple[str, int], datagrams: list[bytes], source: str = "127.0.0.1") -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for data in datagrams:
            sock.sendto(data, target)


async def test_a_datagram_replayed_after_a_restart_is_refused(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    udp = {"secret": SECRET, "require_signature": True, "replay_state_file": str(tmp_path / "rs")}
    config = bridge_config(prosody, udp=udp, rooms={"wikis": ["replaywiki"]})
    room = f"replaywiki@{prosody.muc_domain}"
    captured = sign(encode_datagram(change("replaywiki", 1)), SECRET, time.time())
    first = await running_bridge(config)
    second = None
    stopped = False
    try:
        await wait_for(lambda: room in first.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:  # one reader, through the restart
            send(first.addresses[0], [captured])
            before = await collect(client, 1)
            await first.stop()
            stopped = True
            # The same state file, the same port: the bridge restarted.
            port = first.addresses[0][1]
            again = bridge_config(
                prosody, udp={**udp, "listen": f"127.0.0.1:{port}"},
                rooms={"wikis": ["replaywiki"]},
            )  # fmt: skip
            second = await running_bridge(again)
            await wait_for(lambda: room in second.sink.joined_rooms(), what="the room again")
            fresh = sign(encode_datagram(change("replaywiki", 2)), SECRET, time.time())
            send(second.addresses[0], [captured, fresh])
            after = await collect(client, 1, quiet=1.0)
    finally:
        if not stopped:
            await first.stop()
        if second is not None:
            await second.stop()
    assert [d.change.rcid for d in before] == [1]
    assert [d.change.rcid for d in after] == [2]  # the replay reached nobody
    assert second.stats.rejected == {"replayed": 1}
    assert first.stats.rejected == {}


async def test_junk_from_a_signers_address_does_not_stop_the_signer(
    prosody: ProsodyServer,
) -> None:
    # A budget of 30, refilled so slowly (one per 100 s) that the test sees exactly
    # the burst whatever the machine's speed.
    config = bridge_config(
        prosody,
        udp={
            "secret": SECRET,
            "require_signature": True,
            "rate_limit": {"per_source_rate": 0.01, "burst": 30, "penalty_seconds": 600},
        },
        rooms={"wikis": ["junkwiki"]},
    )
    bridge = await running_bridge(config)
    room = f"junkwiki@{prosody.muc_domain}"
    forged = b"XMLRC-SIG v1 %d %s\n" % (int(time.time()), b"0" * 64)
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            target = bridge.addresses[0]
            for batch in range(4):  # junk and signed changes, interleaved, same address
                junk = [encode_datagram(change("junkwiki", 900 + i)) for i in range(80)]
                junk += [forged + encode_datagram(change("junkwiki", 990))] * 20
                send(target, junk)
                send(target, [sign(encode_datagram(change("junkwiki", batch * 5 + i)), SECRET,
                                   time.time()) for i in range(5)])  # fmt: skip
            await wait_for(lambda: bridge.stats.received == 420, what="every datagram")
            deliveries = await collect(client, 20)
    finally:
        await bridge.stop()
    assert sorted(d.change.rcid or 0 for d in deliveries) == list(range(20))
    rejected = bridge.stats.rejected
    assert rejected["unsigned"] + rejected["bad_signature"] == 30  # the junk budget
    assert rejected["rate_limited"] == 400 - 30  # then dropped as over it
    assert bridge.edge.limiter is not None and bridge.edge.limiter.penalties == 0
    assert bridge.edge.unverified is not None and bridge.edge.unverified.penalties == 1
