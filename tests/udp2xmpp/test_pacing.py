"""The outbound pacer keeps to its stanza and byte budgets (clock injected)."""

from __future__ import annotations

from xmlrc.xmpp.outbox import Pacer


def sent_within(pacer: Pacer, size: int, seconds: float, step: float = 0.001) -> int:
    now, sent = 0.0, 0
    while now < seconds:
        if pacer.delay(size, now) == 0:
            sent += 1
        else:
            now += step
    return sent


def test_stanza_rate_allows_one_second_of_burst_then_the_rate() -> None:
    sent = sent_within(Pacer(100, 0), size=10, seconds=2.0)
    assert 100 + 199 <= sent <= 100 + 201


def test_byte_rate_limits_large_stanzas() -> None:
    sent = sent_within(Pacer(0, 10_000), size=1_000, seconds=3.0)
    assert 10 + 29 <= sent <= 10 + 31


def test_a_stanza_larger_than_the_byte_budget_still_goes_when_the_bucket_is_full() -> None:
    pacer = Pacer(0, 1_000)
    assert pacer.delay(50_000, 0.0) == 0.0
    assert pacer.delay(10, 0.0) > 0


def test_no_limits_never_delays() -> None:
    pacer = Pacer(0, 0)
    assert all(pacer.delay(10**6, 0.0) == 0.0 for _ in range(10_000))


def test_delay_takes_nothing_when_it_says_wait() -> None:
    pacer = Pacer(1, 0)
    assert pacer.delay(1, 0.0) == 0.0
    wait = pacer.delay(1, 0.0)
    assert wait == 1.0
    assert pacer.delay(1, 0.5) == 0.5
    assert pacer.delay(1, 1.0) == 0.0
