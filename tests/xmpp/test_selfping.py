"""The XEP-0410 verdict table: every outcome the XEP lists (section 3)."""

from __future__ import annotations

import pytest

from xmlrc.xmpp.selfping import Verdict, verdict


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (None, Verdict.JOINED),  # a result
        ("service-unavailable", Verdict.JOINED),  # the occupant's client ignores pings
        ("feature-not-implemented", Verdict.JOINED),
        ("item-not-found", Verdict.JOINED),  # our nick changed meanwhile
        ("remote-server-not-found", Verdict.UNDECIDED),  # decides nothing: like a timeout
        ("remote-server-timeout", Verdict.UNDECIDED),
        ("not-acceptable", Verdict.NOT_JOINED),  # the room does not know us
        ("not-allowed", Verdict.NOT_JOINED),
        ("forbidden", Verdict.NOT_JOINED),
        ("bad-request", Verdict.NOT_JOINED),  # "any other error": rejoin
        ("undefined-condition", Verdict.NOT_JOINED),
    ],
)
def test_verdict_follows_xep_0410(answer: str | None, expected: Verdict) -> None:
    assert verdict(answer) is expected


def test_bridge_and_client_share_the_one_table() -> None:
    import rcclient.client
    import udp2xmpp.sink.xmpp

    assert udp2xmpp.sink.xmpp.self_ping is rcclient.client.self_ping
