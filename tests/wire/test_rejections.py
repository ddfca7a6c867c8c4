"""Hostile and malformed datagrams: each yields a rejection with its reason."""

from __future__ import annotations

import pytest

from tests.fixtures import JSON_FEED_PORT, XML_FEED_PORT, packets
from xmlrc.wire import RecentChange, Rejection, RejectReason, decode_datagram

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<rc wikiid="w" type="edit" ns="0" title="&lol2;" timestamp="2026-01-01T00:00:00Z"/>"""
EXTERNAL_ENTITY = b"""<!DOCTYPE rc [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rc wikiid="w" type="edit" ns="0" title="&xxe;" timestamp="2026-01-01T00:00:00Z"/>"""
VALID_RC = b'<rc wikiid="w" type="edit" ns="0" title="T" timestamp="2026-01-01T00:00:00Z"/>'


def reason(data: bytes) -> RejectReason:
    result = decode_datagram(data)
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", RejectReason.EMPTY),
        (b"   \n ", RejectReason.EMPTY),
        (BILLION_LAUGHS, RejectReason.FORBIDDEN_XML),
        (EXTERNAL_ENTITY, RejectReason.FORBIDDEN_XML),
        (b"<a>" * 10_000, RejectReason.BAD_XML),
        (b"<rc>" + b"<x>" * 40 + b"</x>" * 40 + b"</rc>", RejectReason.TOO_DEEP),
        (
            b"<rc " + b" ".join(b'a%d="1"' % i for i in range(100)) + b"/>",
            RejectReason.TOO_MANY_ATTRIBUTES,
        ),
        (
            VALID_RC.replace(b'title="T"', b'title="' + b"x" * 60_000 + b'" title="y"'),
            RejectReason.BAD_XML,
        ),
        (b"\xff\xfe{not utf8", RejectReason.UNKNOWN_FORMAT),
        (b'{"title": "\xff\xfe"}', RejectReason.BAD_ENCODING),
        (b"[1, 2]", RejectReason.UNKNOWN_FORMAT),
        (b'{"wiki": 5}', RejectReason.BAD_FIELD),
        (b'{"wiki": "a/b"}', RejectReason.BAD_WIKI),
        (b"<html><body/></html>", RejectReason.UNKNOWN_FORMAT),
        (VALID_RC.replace(b'wikiid="w"', b'wikiid="a@evil/room"'), RejectReason.BAD_WIKI),
        (VALID_RC.replace(b'wikiid="w"', b'wikiid="a b"'), RejectReason.BAD_WIKI),
        (VALID_RC.replace(b'ns="0"', b'ns="99999999999999999999999"'), RejectReason.BAD_FIELD),
        (VALID_RC.replace(b"2026-01-01T00:00:00Z", b"yesterday"), RejectReason.BAD_FIELD),
        (VALID_RC.replace(b'type="edit"', b'type="<x>"'), RejectReason.BAD_XML),
        (VALID_RC.replace(b'type="edit"', b'type="e dit"'), RejectReason.BAD_FIELD),
        (
            b'<rc type="edit" ns="0" title="T" timestamp="2026-01-01T00:00:00Z"/>',
            RejectReason.MISSING_FIELD,
        ),
        (
            b'{"wiki":"w","type":"edit","namespace":0,"title":"T","user":"u","timestamp":1e300}',
            RejectReason.BAD_FIELD,
        ),
        (
            b'{"wiki":"w","type":"edit","namespace":true,"title":"T","user":"u","timestamp":1}',
            RejectReason.BAD_FIELD,
        ),
        (b"[" * 60_000, RejectReason.UNKNOWN_FORMAT),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, RejectReason.TOO_LARGE),
    ],
)
def test_hostile_datagram_is_rejected_with_reason(data: bytes, expected: RejectReason) -> None:
    assert reason(data) == expected


def test_deep_json_is_rejected_not_crashed() -> None:
    data = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    assert len(data) < 65507
    assert reason(data) == RejectReason.BAD_JSON


def test_oversized_datagram_is_rejected_before_parsing() -> None:
    assert reason(b"{" + b" " * 70_000 + b"}") == RejectReason.TOO_LARGE
    assert isinstance(decode_datagram(VALID_RC + b" " * 100), RecentChange)
    result = decode_datagram(VALID_RC + b" " * 100, max_bytes=len(VALID_RC))
    assert isinstance(result, Rejection) and result.reason == RejectReason.TOO_LARGE


def test_line_prefix_is_stripped_from_every_line() -> None:
    xml_packet = packets(XML_FEED_PORT)[0]
    prefixed = b"\n".join(b"rc-farm " + line for line in xml_packet.split(b"\n")) + b"\n"
    assert decode_datagram(prefixed) == decode_datagram(xml_packet)
    json_packet = packets(JSON_FEED_PORT)[0]
    assert decode_datagram(b"mywiki " + json_packet + b"\n") == decode_datagram(json_packet)


def test_valid_minimal_rc_is_accepted() -> None:
    change = decode_datagram(VALID_RC)
    assert isinstance(change, RecentChange)
    assert change.title == "T" and change.user == "" and change.patrolled is None


def test_fields_longer_than_any_wiki_allows_are_refused() -> None:
    long_comment = VALID_RC.replace(b"/>", b' comment="' + b"x" * 4001 + b'"/>')
    result = decode_datagram(long_comment)
    assert isinstance(result, Rejection)
    assert result.reason == RejectReason.BAD_FIELD
    assert "comment: longer than 4000" in result.detail
    assert isinstance(decode_datagram(long_comment.replace(b"x" * 4001, b"x" * 4000)), RecentChange)
