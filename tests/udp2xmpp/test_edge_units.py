"""The edge, as pure code: allowlist, per-source rate limit, and the guard that chains them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from udp2xmpp.config import ConfigError, parse_config
from udp2xmpp.source.allow import LOOPBACK, SourceAllowlist, source_address
from udp2xmpp.source.edge import IN_PENALTY_BOX, NOT_ALLOWED, EdgeGuard
from udp2xmpp.source.ratelimit import ALLOW, IN_PENALTY, PENALIZED, SourceRateLimiter
from xmlrc.wire import Rejection, RejectReason, SignatureChecker, sign

SECRET = "0123456789abcdef-edge"

# -- allowlist ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.200.3.4", True),
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("192.168.1.1", False),
        ("::1", True),
        ("2001:db8:aa::5", True),
        ("2001:db8:ab::5", False),
        ("::2", False),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped: matched as 127.0.0.1
        ("::ffff:10.1.0.9", True),
        ("::ffff:192.168.1.1", False),
        ("fe80::1%lo", False),
        ("not an address", False),
        ("", False),
    ],
)
def test_allowlist_v4_v6_and_mapped(host: str, allowed: bool) -> None:
    allowlist = SourceAllowlist([*LOOPBACK, "10.1.0.0/16", "2001:db8:aa::/48"])
    assert allowlist.allowed(host) is allowed
    assert allowlist.allowed(host) is allowed  # the cached answer is the same


def test_allowlist_zone_and_mapped_parsing() -> None:
    assert SourceAllowlist(["fe80::/10"]).allowed("fe80::1%eth0")
    assert str(source_address("::ffff:1.2.3.4")) == "1.2.3.4"
    # An IPv6 rule never matches an IPv4 source, and the reverse.
    assert not SourceAllowlist(["::/0"]).allowed("127.0.0.1")
    assert not SourceAllowlist(["0.0.0.0/0"]).allowed("::1")
    assert SourceAllowlist(["0.0.0.0/0"]).allowed("::ffff:8.8.8.8")


def test_allowlist_cache_is_bounded() -> None:
    allowlist = SourceAllowlist(["127.0.0.0/8"], cache_size=8)
    for i in range(100):
        assert allowlist.allowed(f"127.0.0.{i}")
        assert not allowlist.allowed(f"10.0.0.{i}")
        assert len(allowlist._cache) <= 8


# -- rate limiter -------------------------------------------------------------------


def test_burst_then_penalty_box() -> None:
    limiter = SourceRateLimiter(rate=10, burst=5, penalty=30)
    assert [limiter.check("a", 0.0) for _ in range(5)] == [ALLOW] * 5
    assert limiter.check("a", 0.0) == PENALIZED
    assert limiter.penalties == 1
    # In the box: ignored even once its bucket has refilled, until the penalty ends.
    assert limiter.check("a", 1.0) == IN_PENALTY
    assert limiter.check("a", 29.999) == IN_PENALTY
    assert limiter.in_penalty(29.999) == ["a"]
    assert limiter.check("a", 30.0) == ALLOW
    assert limiter.in_penalty(30.0) == []
    # It earned tokens meanwhile (capped at the burst).
    assert [limiter.check("a", 30.0) for _ in range(4)] == [ALLOW] * 4
    assert limiter.check("a", 30.0) == PENALIZED
    assert limiter.penalties == 2


def test_sustained_rate_within_budget_is_never_limited() -> None:
    limiter = SourceRateLimiter(rate=100, burst=1, penalty=10)
    assert all(limiter.check("a", i / 100) == ALLOW for i in range(1000))
    # Twice the rate: over the budget.
    limiter = SourceRateLimiter(rate=100, burst=1, penalty=10)
    verdicts = [limiter.check("b", i / 200) for i in range(4)]
    assert verdicts[:2] == [ALLOW, PENALIZED] and verdicts[2:] == [IN_PENALTY, IN_PENALTY]


def test_one_source_in_the_box_does_not_affect_another() -> None:
    limiter = SourceRateLimiter(rate=1, burst=2, penalty=60)
    for _ in range(3):
        limiter.check("flood", 0.0)
    assert limiter.check("flood", 0.5) == IN_PENALTY
    assert [limiter.check("calm", 0.5) for _ in range(2)] == [ALLOW, ALLOW]


def test_zero_penalty_is_a_plain_token_bucket() -> None:
    limiter = SourceRateLimiter(rate=1, burst=1, penalty=0)
    assert limiter.check("a", 0.0) == ALLOW
    assert limiter.check("a", 0.5) == PENALIZED
    assert limiter.check("a", 1.5) == ALLOW  # no box: back as soon as a token is earned


def test_table_is_a_bounded_lru() -> None:
    limiter = SourceRateLimiter(rate=1, burst=2, penalty=60, max_sources=3)
    for source in ("a", "b", "c"):
        limiter.check(source, 0.0)
    limiter.check("a", 0.0)  # a: bucket now empty, and most recently seen
    limiter.check("d", 0.0)  # table full: b, the least recently seen, is forgotten
    assert len(limiter) == 3 and limiter.evictions == 1
    assert limiter.check("a", 0.0) == PENALIZED  # a's state was kept
    limiter.check("b", 0.0)  # b comes back with a fresh bucket (evicts c)
    assert limiter.check("b", 0.0) == ALLOW
    for i in range(1000):
        limiter.check(f"spoofed-{i}", 1.0)
    assert len(limiter) == 3


@pytest.mark.parametrize(
    "args", [(0, 1, 1), (1, 0, 1), (1, 1, -1)], ids=["rate", "burst", "penalty"]
)
def test_limiter_refuses_nonsense(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="need rate"):
        SourceRateLimiter(*args)


# -- the guard ------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def guard(*, require: bool = False, secret: str | None = SECRET, burst: int = 3) -> EdgeGuard:
    return EdgeGuard(
        SourceAllowlist(["127.0.0.1/32", "::1/128"]),
        SourceRateLimiter(rate=1, burst=burst, penalty=10),
        SignatureChecker(secret, require=require),
        monotonic=Clock(100.0),
        wall=Clock(1_700_000_000.0),
    )


def test_guard_checks_source_then_rate_then_signature() -> None:
    edge = guard(require=False)  # signatures optional: every datagram spends the budget
    signed = sign(b"<rc/>", SECRET, 1_700_000_000)
    assert edge.admit(signed, "127.0.0.2") is NOT_ALLOWED
    assert edge.admit(signed, "127.0.0.1") == b"<rc/>"
    assert edge.admit(b"<rc/>", "127.0.0.1") == b"<rc/>"
    # Third datagram empties the bucket (rate limiting comes before the signature check).
    tampered = edge.admit(signed.replace(b"<rc/>", b"<rx/>"), "127.0.0.1")
    assert isinstance(tampered, Rejection) and tampered.reason is RejectReason.BAD_SIGNATURE
    penalized = edge.admit(signed, "127.0.0.1")
    assert isinstance(penalized, Rejection) and penalized.reason is RejectReason.RATE_LIMITED
    assert penalized is not IN_PENALTY_BOX and "10 s" in penalized.detail  # logged once
    assert edge.admit(signed, "127.0.0.1") is IN_PENALTY_BOX  # then silently
    assert edge.admit(sign(b"<v6/>", SECRET, 1_700_000_000), "::1") == b"<v6/>"  # others pass


def test_required_signatures_only_verified_traffic_spends_the_budget() -> None:
    edge = guard(require=True)
    assert edge.unverified is not None and edge.limiter is not None
    assert edge.admit(sign(b"<rc/>", SECRET, 1_700_000_000), "127.0.0.2") is NOT_ALLOWED
    # Junk from the signer's address: its own budget (3), then its own penalty box.
    junk = [b"<rc/>", b"XMLRC-SIG v1 1700000000 " + b"0" * 64 + b"\n<rc/>", b"<x/>"]
    reasons = [edge.admit(item, "127.0.0.1") for item in junk]
    assert [r.reason for r in reasons if isinstance(r, Rejection)] == [
        RejectReason.UNSIGNED, RejectReason.BAD_SIGNATURE, RejectReason.UNSIGNED,
    ]  # fmt: skip
    over = edge.admit(b"<rc/>", "127.0.0.1")
    assert isinstance(over, Rejection) and over.reason is RejectReason.RATE_LIMITED
    assert over is not IN_PENALTY_BOX and "unverified" in over.detail  # logged once
    assert edge.admit(b"<rc/>", "127.0.0.1") is IN_PENALTY_BOX  # then silently
    replay = sign(b"<r0/>", SECRET, 1_700_000_000)
    assert edge.admit(replay, "127.0.0.1") == b"<r0/>"  # the signer is not affected
    for _ in range(10):  # replays of a captured datagram are junk, not the signer's
        assert edge.admit(replay, "127.0.0.1") is IN_PENALTY_BOX
    assert edge.unverified.penalties == 1 and edge.limiter.penalties == 0
    # The signer's own budget (3 verified datagrams) still holds it to its rate.
    assert edge.admit(sign(b"<r1/>", SECRET, 1_700_000_000), "127.0.0.1") == b"<r1/>"
    assert edge.admit(sign(b"<r2/>", SECRET, 1_700_000_000), "127.0.0.1") == b"<r2/>"
    runaway = edge.admit(sign(b"<r3/>", SECRET, 1_700_000_000), "127.0.0.1")
    assert isinstance(runaway, Rejection) and runaway.reason is RejectReason.RATE_LIMITED
    assert "over its rate limit" in runaway.detail and edge.limiter.penalties == 1
    # In the verified box, dropped before the signature is even checked.
    assert edge.admit(sign(b"<r4/>", SECRET, 1_700_000_000), "127.0.0.1") is IN_PENALTY_BOX
    assert len(edge.signatures) == 4


def test_guard_without_secret_passes_unsigned_and_refuses_signed() -> None:
    edge = guard(secret=None)
    assert edge.admit(b"<rc/>", "127.0.0.1") == b"<rc/>"
    refused = edge.admit(sign(b"<rc/>", SECRET, 1_700_000_000), "127.0.0.1")
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.BAD_SIGNATURE


# -- config -----------------------------------------------------------------------------


def config(**udp: Any) -> Any:
    return parse_config(
        {
            "xmpp": {"jid": "rcbot@localhost", "password": "x"},
            "udp": udp,
            "rooms": {"service": "conference.localhost"},
        },
        base_dir=Path("."),
    )


def test_edge_defaults() -> None:
    udp = config().udp
    assert udp.allow == ("127.0.0.0/8", "::1/128")
    assert udp.secret is None and not udp.require_signature
    assert udp.signature_window == 300 and udp.replay_memory == 100_000
    limits = udp.rate_limit
    assert (limits.enabled, limits.per_source_rate, limits.burst) == (True, 5000.0, 20_000)
    assert (limits.penalty_seconds, limits.max_sources) == (10.0, 10_000)


def test_edge_keys_are_read_and_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    udp = config(
        allow=["10.0.0.7/8", "2001:DB8::/32", "192.0.2.1"],
        secret="s" * 16,
        require_signature=True,
        signature_window=60,
        rate_limit={"per_source_rate": 50, "burst": 100, "penalty_seconds": 0, "enabled": False},
    ).udp
    assert udp.allow == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32")
    assert udp.secret == "s" * 16 and udp.require_signature and udp.signature_window == 60
    assert udp.rate_limit.per_source_rate == 50.0 and not udp.rate_limit.enabled
    assert "s" * 16 not in repr(udp)  # never in a log line or traceback

    (tmp_path / "udp-secret").write_text("from-a-file-0123456789\n")
    udp = parse_config(
        {
            "xmpp": {"jid": "rcbot@localhost", "password": "x"},
            "udp": {"secret_file": "udp-secret"},
            "rooms": {"service": "conference.localhost"},
        },
        base_dir=tmp_path,
    ).udp
    assert udp.secret == "from-a-file-0123456789"
    monkeypatch.setenv("MY_UDP_SECRET", "from-the-environment-42")
    assert config(secret_env="MY_UDP_SECRET").udp.secret == "from-the-environment-42"
    monkeypatch.setenv("UDP2XMPP_SECRET", "the-default-variable-42")
    assert config().udp.secret == "the-default-variable-42"


@pytest.mark.parametrize(
    ("udp", "message"),
    [
        ({"allow": ["10.0.0.0/33"]}, "udp.allow: '10.0.0.0/33' is not a network"),
        ({"allow": "nonsense"}, "udp.allow: 'nonsense' is not a network"),
        ({"allow": [5]}, "udp.allow: must be a list of networks"),
        ({"require_signature": True}, "udp.require_signature: needs udp.secret"),
        ({"secret": "short"}, "udp.secret: the secret is too short"),
        ({"secret": "s" * 16, "secret_env": "X"}, "udp.secret_env: give only one of"),
        ({"secret_env": "UNSET_VARIABLE_FOR_TEST"}, "udp.secret_env: the variable"),
        ({"secret_file": "/nonexistent/secret"}, "udp.secret_file: /nonexistent/secret"),
        ({"rate_limit": {"burst": 0}}, "udp.rate_limit.burst: must be between 1"),
        ({"rate_limit": {"per_source_rate": 0}}, "udp.rate_limit.per_source_rate: must be at"),
        ({"rate_limit": {"penalty": 5}}, "udp.rate_limit.penalty: unknown key"),
        ({"rate_limit": 5}, "udp.rate_limit: must be a table"),
        ({"signature_window": 0}, "udp.signature_window: must be between 1"),
    ],
)
def test_bad_edge_values_name_the_key(udp: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        config(**udp)
