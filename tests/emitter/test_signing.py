"""Signed datagrams: the format, verification, freshness, replays, and the emitters."""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncio_dgram
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xmlrc.wire import (
    Rejection,
    RejectReason,
    SignatureChecker,
    decode_datagram,
    sign,
    verify,
)
from xmlrc_emitter import AsyncEmitter, Emitter, RecentChange

SECRET = "correct horse battery staple"
PAYLOAD = (
    b'<rc wikiid="enwiki" type="edit" ns="0" title="Main Page" rcid="1"'
    b' timestamp="2023-11-14T22:13:20Z"/>'
)
T0 = 1_700_000_000
#: The README's test vector (checked with `openssl dgst -sha256 -hmac`).
VECTOR = (
    b"XMLRC-SIG v1 1700000000 427dc18094c12015d99613dd66767c0a9e90c5722f6fc3944820e0961f780699\n"
    + PAYLOAD
)
CHANGE = RecentChange(
    wiki="mywiki", type="edit", ns=0, title="Main Page", user="Alice",
    timestamp=datetime(2026, 11, 21, 12, 0, tzinfo=UTC), rcid=7,
)  # fmt: skip
XMLRC_EMIT = Path(sys.executable).parent / "xmlrc-emit"


def reason(result: bytes | Rejection) -> RejectReason:
    assert isinstance(result, Rejection), result
    return result.reason


def test_the_format_matches_the_documented_vector() -> None:
    signed = sign(PAYLOAD, SECRET, T0)
    assert signed == VECTOR
    header, _, payload = signed.partition(b"\n")
    assert re.fullmatch(rb"XMLRC-SIG v1 [0-9]+ [0-9a-f]{64}", header)
    assert payload == PAYLOAD
    # The MAC covers the datagram without its MAC field: version, time, payload.
    mac = hmac.new(
        SECRET.encode(), b"XMLRC-SIG v1 1700000000\n" + PAYLOAD, hashlib.sha256
    ).hexdigest()
    assert header.split(b" ")[3].decode() == mac


def test_round_trip_gives_the_payload_back() -> None:
    assert verify(sign(PAYLOAD, SECRET, T0), SECRET, T0 + 5) == PAYLOAD
    assert verify(sign(PAYLOAD, SECRET.encode(), T0), SECRET, T0) == PAYLOAD  # bytes or text
    signed_payload = verify(sign(b"farm " + PAYLOAD + b"\n", SECRET, T0), SECRET, T0)
    assert decode_datagram(signed_payload) == decode_datagram(PAYLOAD)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (VECTOR.replace(b"Main Page", b"Main Pagf"), RejectReason.BAD_SIGNATURE),  # payload
        (VECTOR.replace(b"1700000000", b"1700000001", 1), RejectReason.BAD_SIGNATURE),  # time
        (VECTOR.replace(b" v1 ", b" v2 "), RejectReason.BAD_SIGNATURE),  # version
        (VECTOR.replace(b"427dc1", b"427DC1"), RejectReason.BAD_SIGNATURE),  # not lowercase
        (VECTOR.replace(b"427dc1", b"427dc"), RejectReason.BAD_SIGNATURE),  # 63 digits
        (VECTOR.replace(b"427dc1", b"427dcg"), RejectReason.BAD_SIGNATURE),  # not hex
        (VECTOR.replace(b"1700000000 ", b""), RejectReason.BAD_SIGNATURE),  # no time
        (VECTOR.replace(b"\n", b" "), RejectReason.BAD_SIGNATURE),  # no header line
        (VECTOR[: VECTOR.index(b"\n")], RejectReason.BAD_SIGNATURE),  # no payload at all
        (b"XMLRC-SIG", RejectReason.BAD_SIGNATURE),
        (PAYLOAD, RejectReason.UNSIGNED),
        (b" " + VECTOR, RejectReason.UNSIGNED),  # the header must come first
    ],
)
def test_tampered_or_malformed_datagrams_are_refused(
    datagram: bytes, expected: RejectReason
) -> None:
    assert reason(verify(datagram, SECRET, T0)) is expected


def test_a_wrong_secret_is_a_bad_signature() -> None:
    assert reason(verify(VECTOR, "another secret of some length", T0)) is RejectReason.BAD_SIGNATURE


def test_freshness_window_either_way() -> None:
    assert verify(VECTOR, SECRET, T0 + 300, window=300) == PAYLOAD  # the bound is inclusive
    assert verify(VECTOR, SECRET, T0 - 300, window=300) == PAYLOAD  # signer's clock ahead
    assert reason(verify(VECTOR, SECRET, T0 + 301, window=300)) is RejectReason.STALE_SIGNATURE
    assert reason(verify(VECTOR, SECRET, T0 - 301, window=300)) is RejectReason.STALE_SIGNATURE
    assert reason(verify(VECTOR, SECRET, T0 + 3600)) is RejectReason.STALE_SIGNATURE  # default


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign(PAYLOAD, "", T0)


@given(payload=st.binary(max_size=2000), secret=st.binary(min_size=1, max_size=64))
def test_any_payload_round_trips(payload: bytes, secret: bytes) -> None:
    assert verify(sign(payload, secret, T0), secret, T0) == payload


@given(st.data())
def test_any_flipped_bit_is_caught(data: st.DataObject) -> None:
    signed = sign(PAYLOAD, SECRET, T0)
    index = data.draw(st.integers(0, len(signed) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(signed)
    flipped[index] ^= 1 << bit
    result = verify(bytes(flipped), SECRET, T0)
    assert isinstance(result, Rejection)


# -- the bridge's policy: SignatureChecker --------------------------------------------


def test_checker_refuses_an_exact_replay_within_the_window() -> None:
    checker = SignatureChecker(SECRET)
    assert checker.check(VECTOR, T0) == PAYLOAD
    assert reason(checker.check(VECTOR, T0 + 10)) is RejectReason.REPLAYED
    # Same payload signed a second later: a new signature, accepted.
    assert checker.check(sign(PAYLOAD, SECRET, T0 + 1), T0 + 10) == PAYLOAD


def test_checker_unsigned_passes_unless_required() -> None:
    assert SignatureChecker(SECRET).check(PAYLOAD, T0) == PAYLOAD
    assert SignatureChecker(None).check(PAYLOAD, T0) == PAYLOAD
    assert reason(SignatureChecker(SECRET, require=True).check(PAYLOAD, T0)) is (
        RejectReason.UNSIGNED
    )
    with pytest.raises(ValueError, match="needs a secret"):
        SignatureChecker(None, require=True)


def test_checker_bad_mac_is_refused_even_when_not_required() -> None:
    checker = SignatureChecker("another secret of some length", require=False)
    assert reason(checker.check(VECTOR, T0)) is RejectReason.BAD_SIGNATURE
    # Without a secret a signature cannot be checked: refused, not waved through.
    assert reason(SignatureChecker(None).check(VECTOR, T0)) is RejectReason.BAD_SIGNATURE


def test_checker_forgets_what_is_past_the_window() -> None:
    checker = SignatureChecker(SECRET, window=60)
    for offset in range(5):
        assert (
            checker.check(sign(b"%d" % offset, SECRET, T0 + offset), T0 + offset) == b"%d" % offset
        )
    assert len(checker) == 5
    assert checker.check(sign(b"late", SECRET, T0 + 100), T0 + 100) == b"late"
    assert len(checker) == 1  # the five are older than the window: forgotten
    # ... and a replay of one of them is refused anyway, as stale.
    old = sign(b"0", SECRET, T0)
    assert reason(checker.check(old, T0 + 100)) is RejectReason.STALE_SIGNATURE


def test_checker_memory_is_bounded_and_never_lets_a_replay_through() -> None:
    checker = SignatureChecker(SECRET, window=300, max_recent=3)
    datagrams = [sign(b"change %d" % i, SECRET, T0 + i) for i in range(6)]
    for i, datagram in enumerate(datagrams):
        assert checker.check(datagram, T0 + i) == b"change %d" % i
        assert len(checker) <= 3
    # The first three were forgotten for room, within the window: their replay is
    # refused as stale (older than what the memory covers), the others as replays.
    for datagram in datagrams[:3]:
        assert reason(checker.check(datagram, T0 + 6)) is RejectReason.STALE_SIGNATURE
    for datagram in datagrams[3:]:
        assert reason(checker.check(datagram, T0 + 6)) is RejectReason.REPLAYED
    assert checker.check(sign(b"fresh", SECRET, T0 + 6), T0 + 6) == b"fresh"


# -- the emitters and xmlrc-emit ---------------------------------------------------------


def test_emitter_with_a_secret_sends_signed_datagrams() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        with Emitter(*receiver.getsockname(), secret=SECRET, fmt="mw-json") as emitter:
            size = emitter.send(CHANGE)
            emitter.send_raw(b"raw")  # send_raw sends bytes as they are
        data, _ = receiver.recvfrom(65535)
        assert receiver.recvfrom(65535)[0] == b"raw"
    assert len(data) == size and data.startswith(b"XMLRC-SIG v1 ")
    payload = verify(data, SECRET, time.time())
    assert isinstance(payload, bytes)
    assert decode_datagram(payload) == CHANGE


async def test_async_emitter_with_a_secret_sends_signed_datagrams() -> None:
    server = await asyncio_dgram.bind(("127.0.0.1", 0))
    try:
        async with AsyncEmitter(*server.sockname[:2], secret=SECRET) as emitter:
            await emitter.send(CHANGE)
        data, _ = await server.recv()
    finally:
        server.close()
    payload = verify(data, SECRET, time.time())
    assert isinstance(payload, bytes) and decode_datagram(payload) == CHANGE


def test_xmlrc_emit_signs_with_a_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        host, port = receiver.getsockname()
        result = subprocess.run(
            [str(XMLRC_EMIT), "--target", f"{host}:{port}", "--secret-file", str(secret_file),
             "--wiki", "mywiki", "--title", "Signed", "--rcid", "3"],
            capture_output=True, text=True, timeout=30, check=False, env={},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        data, _ = receiver.recvfrom(65535)
    payload = verify(data, SECRET, time.time())
    assert isinstance(payload, bytes)
    change = decode_datagram(payload)
    assert isinstance(change, RecentChange) and change.title == "Signed" and change.rcid == 3


def test_xmlrc_emit_refuses_two_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    result = subprocess.run(
        [str(XMLRC_EMIT), "--secret", "x" * 20, "--secret-file", str(secret_file),
         "--wiki", "w", "--title", "T"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "not both" in result.stderr
