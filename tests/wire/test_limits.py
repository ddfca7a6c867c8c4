"""Every field has a limit, enforced by every decoder; the validation decisions.

Each input format is exercised through its own decoder: XMLRC and MediaWiki
XML and JSON datagrams through `decode_datagram`, the API's JSON through
`change_from_api` (rc2udp's path), so no format can skip a limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from lxml import etree

from xmlrc.wire import (
    DatagramFormat,
    DecodeError,
    RecentChange,
    Rejection,
    RejectReason,
    change_from_element,
    change_from_json,
    change_to_line,
    decode_datagram,
    encode_datagram,
)
from xmlrc.wire.apijson import Site, change_from_api
from xmlrc.wire.coerce import (
    FIELD_LIMITS,
    MAX_LOGPARAMS_CHARS,
    MAX_LOGPARAMS_DEPTH,
    MAX_LOGPARAMS_ITEMS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
)
from xmlrc.wire.jsonfeed import change_from_json_bytes, change_to_json_bytes
from xmlrc.wire.model import iso_from_utc
from xmlrc.wire.rcxml import change_to_xml_text

LOG = RecentChange(
    wiki="w",
    type="log",
    ns=2,
    title="User:Alice",
    timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    user="Admin",
    rcid=7,
    comment="spam",
    logid=3,
    logtype="block",
    logaction="block",
    logparams={"duration": "1 day"},
    log_action_comment="blocked [[User:Alice]]",
    server_url="https://w.example",
    server_name="w.example",
    server_script_path="/w",
)


def api_item(change: RecentChange) -> dict[str, Any]:
    """The API's formatversion=2 item for a change (what rc2udp decodes)."""
    item: dict[str, Any] = {
        "type": change.type, "ns": change.ns, "title": change.title, "rcid": change.rcid,
        "pageid": change.pageid, "revid": change.revid, "old_revid": change.old_revid,
        "user": change.user, "userid": change.userid, "oldlen": change.oldlen,
        "newlen": change.newlen, "timestamp": iso_from_utc(change.timestamp),
        "comment": change.comment, "parsedcomment": change.parsedcomment, "logid": change.logid,
        "logtype": change.logtype, "logaction": change.logaction, "logparams": change.logparams,
        "sha1": change.sha1, "tags": list(change.tags) if change.tags is not None else None,
    }  # fmt: skip
    return {key: value for key, value in item.items() if value is not None}


def via_api(change: RecentChange) -> RecentChange | Rejection:
    site = Site(change.wiki, change.server_url, change.server_name, change.server_script_path)
    try:
        return change_from_api(api_item(change), site)
    except DecodeError as exc:
        return exc.rejection()


def via_datagram(fmt: DatagramFormat) -> Callable[[RecentChange], RecentChange | Rejection]:
    return lambda change: decode_datagram(encode_datagram(change, fmt))


FORMATS = {
    "xmlrc": via_datagram(DatagramFormat.XMLRC),
    "mw-json": via_datagram(DatagramFormat.MW_JSON),
    "mw-xml": via_datagram(DatagramFormat.MW_XML),
    "api": via_api,
}
#: What each format carries (MediaWiki's XML feed has no sha1, parsedcomment or tags;
#: the API names no server, which comes from siteinfo and is checked all the same).
NOT_CARRIED = {"mw-xml": {"sha1", "parsedcomment", "tags"}, "api": {"log_action_comment"}}


def refused(result: RecentChange | Rejection, reason: RejectReason, text: str) -> bool:
    return isinstance(result, Rejection) and result.reason == reason and text in result.detail


CASES = [
    (fmt, name)
    for fmt in FORMATS
    for name in FIELD_LIMITS
    if name not in NOT_CARRIED.get(fmt, set())
]


@pytest.mark.parametrize(("fmt", "name"), CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_every_text_field_is_limited_in_every_format(fmt: str, name: str) -> None:
    limit = FIELD_LIMITS[name]
    # Limits count characters; ASCII JSON datagrams spell é in 6 bytes, and hold 64 KiB.
    char = "é" if limit <= 4000 else "x"
    at_limit = FORMATS[fmt](LOG.with_changes(**{name: char * limit}))
    assert isinstance(at_limit, RecentChange), at_limit
    assert getattr(at_limit, name) == char * limit
    over = FORMATS[fmt](LOG.with_changes(**{name: char * (limit + 1)}))
    assert refused(over, RejectReason.BAD_FIELD, f"{name}: longer than {limit} characters"), over


@pytest.mark.parametrize("fmt", ["xmlrc", "mw-json", "api"])
def test_tags_are_limited_in_count_and_length(fmt: str) -> None:
    decode = FORMATS[fmt]
    most = decode(LOG.with_changes(tags=("t" * MAX_TAG_LENGTH,) * MAX_TAGS))
    assert isinstance(most, RecentChange) and most.tags == ("t" * MAX_TAG_LENGTH,) * MAX_TAGS
    assert refused(
        decode(LOG.with_changes(tags=("t",) * (MAX_TAGS + 1))), RejectReason.BAD_FIELD, "tags"
    )
    assert refused(
        decode(LOG.with_changes(tags=("t" * (MAX_TAG_LENGTH + 1),))),
        RejectReason.BAD_FIELD,
        "tags",
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("ns", -2, True),  # Media
        ("ns", 2**31 - 1, True),
        ("ns", 2**31, False),
        ("ns", -(2**31) - 1, False),
        ("rcid", 2**63 - 1, True),
        ("rcid", -1, False),
        ("logid", -5, False),
    ],
)
def test_integers_are_bounded_in_every_format(
    fmt: str, field: str, value: int, accepted: bool
) -> None:
    result = FORMATS[fmt](LOG.with_changes(**{field: value}))
    if accepted:
        assert isinstance(result, RecentChange) and getattr(result, field) == value
    else:
        assert isinstance(result, Rejection) and result.reason == RejectReason.BAD_FIELD, result


def test_negative_ids_and_lengths_are_refused() -> None:
    edit = {
        "wiki": "w", "type": "edit", "namespace": 0, "title": "T", "user": "u",
        "timestamp": 1, "revision": {"new": 5, "old": 4},
    }  # fmt: skip
    for key, value in [("length", {"old": -1, "new": 3}), ("revision", {"new": -5}), ("id", -1)]:
        with pytest.raises(DecodeError) as info:
            change_from_json({**edit, key: value})
        assert info.value.reason == RejectReason.BAD_FIELD


def logparams_of(element: Any) -> Any:
    found = element.find("{urn:xmlrc:rc:1}logparams")
    assert found is not None
    return found


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_logparams_nested_too_deep_are_refused_in_every_format(fmt: str) -> None:
    deepest = FORMATS[fmt](LOG.with_changes(logparams=nested(MAX_LOGPARAMS_DEPTH)))
    assert isinstance(deepest, RecentChange), deepest
    too_deep = FORMATS[fmt](LOG.with_changes(logparams=nested(MAX_LOGPARAMS_DEPTH + 1)))
    assert refused(too_deep, RejectReason.BAD_FIELD, "logparams: nested deeper"), too_deep


def test_deep_logparams_the_parsers_accept_are_refused_not_lost() -> None:
    # json.loads reads 900 levels; the XML encoders could not write them back.
    deep = nested(900)
    packet = json.dumps(
        {"wiki": "w", "type": "log", "namespace": 0, "title": "T", "user": "u",
         "timestamp": 1, "log_params": deep}
    ).encode()  # fmt: skip
    assert refused(decode_datagram(packet), RejectReason.BAD_FIELD, "logparams: nested deeper")
    element = etree.fromstring(change_to_xml_text(LOG).encode())
    logparams_of(element).text = json.dumps(deep)
    with pytest.raises(DecodeError, match="logparams: nested deeper"):
        change_from_element(element)


def test_logparams_are_limited_in_values_and_text() -> None:
    most = via_api(LOG.with_changes(logparams=[0] * (MAX_LOGPARAMS_ITEMS - 1)))
    assert isinstance(most, RecentChange)
    many = via_api(LOG.with_changes(logparams=[0] * MAX_LOGPARAMS_ITEMS))
    assert refused(many, RejectReason.BAD_FIELD, "logparams: more than")
    # The JSON text of ["xxx..."] is the string and 4 characters.
    longest = via_api(LOG.with_changes(logparams=["x" * (MAX_LOGPARAMS_CHARS - 4)]))
    assert isinstance(longest, RecentChange)
    too_long = via_api(LOG.with_changes(logparams=["x" * (MAX_LOGPARAMS_CHARS - 3)]))
    assert refused(too_long, RejectReason.BAD_FIELD, "logparams: JSON text longer")


FEED = (
    '{"wiki":"w","type":"log","namespace":0,"title":"T","user":"u","timestamp":1,'
    '"log_type":"block","log_action":"block","log_params":PARAMS}'
)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    packet = FEED.replace("PARAMS", f'{{"expiry": {constant}}}').encode()
    assert refused(decode_datagram(packet), RejectReason.BAD_JSON, f"{constant} is not JSON")
    element = etree.fromstring(change_to_xml_text(LOG).encode())
    logparams_of(element).text = f"[{constant}]"
    with pytest.raises(DecodeError, match="logparams: not JSON"):
        change_from_element(element)
    api = via_api(LOG.with_changes(logparams={"expiry": float(constant)}))
    assert refused(api, RejectReason.BAD_FIELD, "logparams")


def test_a_number_too_large_for_a_float_is_refused() -> None:
    # 1e400 is valid JSON syntax, but Python reads it as infinity, which JSON cannot write.
    packet = FEED.replace("PARAMS", '{"expiry": 1e400}').encode()
    assert refused(decode_datagram(packet), RejectReason.BAD_FIELD, "logparams")


@pytest.mark.parametrize(
    "packet",
    [
        '{"wiki":"w","type":"edit","namespace":0,"title":"T","title":"U","user":"u","timestamp":1}',
        FEED.replace("PARAMS", '{"a": 1, "a": 2}'),
        '{"wiki":"w","type":"edit","namespace":0,"title":"T","user":"u","timestamp":1,'
        '"revision":{"new":2,"new":3}}',
    ],
)
def test_duplicate_json_keys_are_refused(packet: str) -> None:
    assert refused(decode_datagram(packet.encode()), RejectReason.BAD_JSON, "duplicate key")
    with pytest.raises(DecodeError) as info:
        change_from_json_bytes(packet)
    assert info.value.reason == RejectReason.BAD_JSON


def test_duplicate_keys_in_rc_logparams_are_refused() -> None:
    element = etree.fromstring(change_to_xml_text(LOG).encode())
    logparams_of(element).text = '{"a": 1, "a": 2}'
    with pytest.raises(DecodeError, match="duplicate key"):
        change_from_element(element)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_only_mediawikis_five_change_types_are_accepted(fmt: str) -> None:
    for change_type in ("edit", "new", "log", "categorize", "external"):
        result = FORMATS[fmt](LOG.with_changes(type=change_type))
        assert isinstance(result, RecentChange) and result.type == change_type
    for change_type in ("comment", "Edit", "flow", "x"):
        result = FORMATS[fmt](LOG.with_changes(type=change_type))
        assert refused(result, RejectReason.BAD_FIELD, "type: not a change type"), result


@pytest.mark.parametrize("bad", ["\x00", "\x1b", chr(0xD800), chr(0xDFFF), "\ufffe"])
def test_json_text_xml_cannot_carry_is_replaced_at_decode(bad: str) -> None:
    """Only JSON can bring these; after decoding, every encoding carries the change."""
    item = api_item(LOG)
    item |= {
        "title": f"A{bad}B", "user": f"U{bad}", "comment": bad, "tags": [f"t{bad}"],
        "logparams": {f"k{bad}": [f"v{bad}"], "n": 1},
    }  # fmt: skip
    change = change_from_api(item, Site("w"))
    assert (change.title, change.user, change.comment) == ("A\ufffdB", "U\ufffd", "\ufffd")
    assert change.tags == ("t\ufffd",)
    # In log parameters JSON escapes controls, so only the others need replacing.
    kept = bad if bad < " " else "\ufffd"
    assert change.logparams == {f"k{kept}": [f"v{kept}"], "n": 1}
    assert change_from_element(etree.fromstring(change_to_xml_text(change).encode())) == change
    assert change_from_json(json.loads(change_to_json_bytes(change))) == change
    assert decode_datagram(encode_datagram(change, DatagramFormat.XMLRC)) == change
    assert decode_datagram(encode_datagram(change, DatagramFormat.MW_JSON)) == change


BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize("control", BIDI)
def test_bidi_controls_leave_title_and_user_in_the_body_line_only(control: str) -> None:
    edit = LOG.with_changes(
        type="edit", title=f"Evil{control}txt.exe", user=f"Mallory{control}", comment=f"x{control}y"
    )
    line = change_to_line(edit)
    assert line.startswith("[[Eviltxt.exe]] ") and " * Mallory * " in line
    assert line.endswith(f"x{control}y")  # the comment ends the line: it can reorder only itself
    back = decode_datagram(encode_datagram(edit, DatagramFormat.XMLRC))
    assert isinstance(back, RecentChange) and back.title == edit.title  # <rc> stays exact
    log_line = change_to_line(LOG.with_changes(logtype=f"b{control}", logaction=f"a{control}"))
    assert log_line.startswith("[[Special:Log/b]] a ")
