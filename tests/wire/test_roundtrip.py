"""Property tests: any change survives every encoding whole; any bytes decode safely."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from xmlrc.wire import (
    DatagramFormat,
    RecentChange,
    Rejection,
    change_from_element,
    change_from_json,
    change_to_json,
    change_to_line,
    change_to_xml,
    decode_datagram,
    encode_datagram,
)
from xmlrc.wire.safexml import has_illegal_xml_chars

# Text that XML 1.0 can carry (the encoders replace the rest; tested separately).
xml_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
).filter(lambda s: not has_illegal_xml_chars(s))
ids = st.none() | st.integers(min_value=0, max_value=2**53)
json_scalar = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | xml_text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(xml_text, inner, max_size=3),
    max_leaves=8,
)
# Naive bounds are what hypothesis wants; `timezones` makes the values aware.
timestamps = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def changes(draw: st.DrawFn) -> RecentChange:
    change_type = draw(st.sampled_from(["edit", "new", "log", "categorize", "external"]))
    is_log = change_type == "log"
    return RecentChange(
        wiki=draw(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)),
        type=change_type,
        ns=draw(st.integers(-2, 3000)),
        title=draw(xml_text),
        timestamp=draw(timestamps),
        user=draw(xml_text),
        rcid=draw(ids),
        pageid=draw(ids),
        revid=draw(ids),
        old_revid=draw(ids),
        userid=draw(ids),
        oldlen=draw(ids),
        newlen=draw(ids),
        comment=draw(xml_text),
        parsedcomment=draw(st.none() | xml_text),
        anon=draw(st.booleans()),
        bot=draw(st.booleans()),
        minor=draw(st.booleans()),
        redirect=draw(st.booleans()),
        patrolled=draw(st.none() | st.booleans()),
        autopatrolled=draw(st.booleans()),
        # XML turns a raw CR in element text into LF; MediaWiki tag names hold no controls.
        tags=draw(
            st.none() | st.lists(xml_text.filter(lambda t: "\r" not in t), max_size=3).map(tuple)
        ),
        sha1=draw(st.none() | st.from_regex(r"[0-9a-f]{40}", fullmatch=True)),
        logid=draw(ids) if is_log else None,
        logtype=draw(st.none() | xml_text) if is_log else None,
        logaction=draw(st.none() | xml_text) if is_log else None,
        logparams=draw(json_value) if is_log else None,
        log_action_comment=draw(st.none() | xml_text) if is_log else None,
        server_url=draw(st.none() | st.just("https://en.wikipedia.org")),
        server_name=draw(st.none() | st.just("en.wikipedia.org")),
        server_script_path=draw(st.none() | st.just("/w")),
    )


@given(changes())
@settings(max_examples=300)
def test_rc_element_round_trip_is_lossless(change: RecentChange) -> None:
    assert change_from_element(etree.fromstring(change_to_xml(change))) == change


@given(changes())
@settings(max_examples=300)
def test_schema_json_round_trip_is_lossless(change: RecentChange) -> None:
    text = json.dumps(change_to_json(change))
    assert change_from_json(json.loads(text)) == change


@given(changes(), st.none() | st.sampled_from(["rc", "wiki.farm-1"]))
@settings(max_examples=200)
def test_xmlrc_and_json_datagrams_round_trip(change: RecentChange, prefix: str | None) -> None:
    for fmt in (DatagramFormat.XMLRC, DatagramFormat.MW_JSON):
        assert decode_datagram(encode_datagram(change, fmt, prefix=prefix)) == change


@given(changes())
@settings(max_examples=200)
def test_mediawiki_xml_datagram_keeps_what_that_format_can_carry(change: RecentChange) -> None:
    back = decode_datagram(encode_datagram(change, DatagramFormat.MW_XML))
    assert isinstance(back, RecentChange)
    for name in ("wiki", "type", "ns", "title", "user", "comment", "rcid", "bot", "minor"):
        assert getattr(back, name) == getattr(change, name)
    assert back.timestamp == change.timestamp.replace(microsecond=0)


@given(changes())
def test_body_line_is_one_line(change: RecentChange) -> None:
    line = change_to_line(change)
    assert "\n" not in line and line.startswith("[[")


@given(st.binary(max_size=2048))
@settings(max_examples=500)
def test_any_bytes_decode_to_a_change_or_a_rejection(data: bytes) -> None:
    result = decode_datagram(data)
    assert isinstance(result, RecentChange | Rejection)
    if isinstance(result, Rejection):
        assert not result.detail.startswith("unexpected"), result


@given(changes(), st.binary(max_size=64), st.integers(0, 400))
@settings(max_examples=300)
def test_corrupted_datagrams_never_raise(change: RecentChange, junk: bytes, cut: int) -> None:
    for fmt in DatagramFormat:
        data = encode_datagram(change, fmt)
        mangled = data[:cut] + junk + data[cut + len(junk) :]
        result = decode_datagram(mangled)
        assert isinstance(result, RecentChange | Rejection)
        if isinstance(result, Rejection):
            assert not result.detail.startswith("unexpected"), result


@given(st.text(max_size=30))
def test_illegal_xml_characters_are_replaced_not_fatal(text: str) -> None:
    change = RecentChange(
        wiki="w",
        type="edit",
        ns=0,
        title=text,
        comment=text + "\x00\x1b\ud800",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    element = etree.fromstring(change_to_xml(change))  # lxml refuses illegal characters
    assert not has_illegal_xml_chars(element.get("comment"))


@given(changes())
@settings(max_examples=200)
def test_fast_serializer_writes_the_same_element_as_elementtree(change: RecentChange) -> None:
    import xml.etree.ElementTree as ET

    from xmlrc.wire.rcxml import change_to_element, change_to_xml_text

    def shape(element: etree._Element) -> tuple[object, ...]:
        return (element.tag, dict(element.attrib), element.text, [shape(c) for c in element])

    fast = etree.fromstring(change_to_xml_text(change).encode())
    reference = etree.fromstring(ET.tostring(change_to_element(change)))
    assert shape(fast) == shape(reference)
