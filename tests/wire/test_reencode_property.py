"""Property tests: whatever any decoder accepts can be encoded again, every way.

Each decoder gets near-valid input with hostile values where values go (any
code point, surrogates and controls included; integers past 64 bits; NaN
and infinities; log parameters nested up to 40 levels). Whatever it
accepts must encode without raising to the ``<rc>`` text, the stanza
element, JSON, every datagram format and the body line, come back equal
from each lossless encoding, and have the `encoded_size` that the room
message really has.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

from xmlrc.wire import (
    MAX_DATAGRAM,
    DatagramFormat,
    DecodeError,
    RecentChange,
    Rejection,
    RejectReason,
    change_from_element,
    change_from_json,
    change_to_element,
    change_to_line,
    decode_datagram,
    encode_datagram,
)
from xmlrc.wire.apijson import Site, change_from_api
from xmlrc.wire.jsonfeed import change_to_json_bytes
from xmlrc.wire.mwxml import change_from_recentchange
from xmlrc.wire.rcxml import change_to_xml_text, escape_text
from xmlrc.wire.safexml import xml_safe
from xmlrc.wire.size import WORST_CASE_SIZE, encoded_size

any_text = st.text(st.characters(exclude_categories=[]), max_size=30)
xml_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30
).filter(lambda s: all(c in "\t\n\r" or " " <= c not in "\ufffe\uffff" for c in s))
any_int = st.integers(0, 3000) | st.integers(-(2**70), 2**70)
scalars = (
    st.none() | st.booleans() | any_int | st.floats(allow_nan=True, allow_infinity=True) | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def nest(depth: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"k": leaf}
    return leaf


logparams = json_values | st.builds(nest, st.integers(10, 40), json_values)
types = st.sampled_from(["edit", "new", "log", "categorize", "external", "bogus"])
wikis = st.sampled_from(["enwiki", "w", "enwiki", "bad wiki"])


@st.composite
def json_objects(draw: st.DrawFn, names: dict[str, str]) -> dict[str, Any]:
    """A feed (or API) object: the required keys, then any of the others, values hostile."""
    obj: dict[str, Any] = {
        names["type"]: draw(types),
        names["ns"]: draw(st.integers(-2, 3000) | any_int),
        names["title"]: draw(any_text),
        names["user"]: draw(any_text),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "comment": any_text, "parsedcomment": any_text, "sha1": any_text, "tags": st.lists(
            any_text, max_size=3), "logtype": any_text, "logaction": any_text,
        "logparams": logparams, "rcid": any_int, "pageid": any_int, "userid": any_int,
        "logid": any_int, "bot": st.booleans(), "minor": st.booleans(),
        "patrolled": st.booleans(), "anon": st.booleans(),
    }  # fmt: skip
    for key in draw(st.sets(st.sampled_from(sorted(optional)))):
        obj[names.get(key, key)] = draw(optional[key])
    if draw(st.booleans()):  # log parameters are where the nesting is: draw them often
        obj[names.get("logparams", "logparams")] = draw(logparams)
    return obj


FEED_NAMES = {
    "type": "type", "ns": "namespace", "title": "title", "user": "user", "rcid": "id",
    "logid": "log_id", "logtype": "log_type", "logaction": "log_action",
    "logparams": "log_params",
}  # fmt: skip
API_NAMES = {"type": "type", "ns": "ns", "title": "title", "user": "user"}


def assert_encodes_and_round_trips(change: RecentChange) -> None:
    text = change_to_xml_text(change)
    assert change_from_element(etree.fromstring(text.encode())) == change
    element = change_to_element(change)
    ET.tostring(element)  # the stanza element serialises
    assert change_from_element(element) == change
    assert change_from_json(json.loads(change_to_json_bytes(change))) == change
    for fmt in DatagramFormat:
        datagram = encode_datagram(change, fmt)
        back = decode_datagram(datagram)
        if len(datagram) > MAX_DATAGRAM:  # UDP's limit, not a loss in the codec
            assert isinstance(back, Rejection) and back.reason == RejectReason.TOO_LARGE
        elif fmt is DatagramFormat.MW_XML:  # lossy by design: it must still decode
            assert isinstance(back, RecentChange), back
        else:
            assert back == change, fmt
    line = change_to_line(change)
    assert "\n" not in line
    body = escape_text(xml_safe(line))
    payload = f"<body>{body}</body>{text}"
    assert encoded_size(change) == len(payload.encode()) <= WORST_CASE_SIZE


def accepted(decode: Any, value: Any) -> RecentChange | None:
    try:
        change = decode(value)
    except DecodeError as exc:
        event(f"refused: {exc.reason.value}")
        return None
    assert isinstance(change, RecentChange)
    event("accepted" + (" with logparams" if change.logparams is not None else ""))
    return change


SETTINGS = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@given(json_objects(FEED_NAMES), wikis, st.integers(0, 2**40) | st.floats())
@SETTINGS
def test_what_the_json_feed_accepts_reencodes(obj: dict[str, Any], wiki: str, ts: Any) -> None:
    obj |= {"wiki": wiki, "timestamp": ts}
    for change in (
        accepted(change_from_json, obj),
        # As bytes too: NaN/Infinity and duplicate keys are refused by the parser then.
        accepted(lambda o: _datagram(json.dumps(o).encode()), obj),
    ):
        if change is not None:
            assert_encodes_and_round_trips(change)


def _datagram(data: bytes) -> RecentChange:
    result = decode_datagram(data)
    if isinstance(result, Rejection):
        assert not result.detail.startswith("unexpected"), result
        raise DecodeError(result.reason, result.detail)
    return result


@given(json_objects(API_NAMES), st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02T03:04:05"]))
@SETTINGS
def test_what_the_api_decoder_accepts_reencodes(obj: dict[str, Any], timestamp: str) -> None:
    obj["timestamp"] = timestamp
    site = Site("enwiki", "https://en.wikipedia.org", "en.wikipedia.org", "/w")
    change = accepted(lambda o: change_from_api(o, site), obj)
    if change is not None:
        assert_encodes_and_round_trips(change)


RC_ATTRS = ["title", "user", "comment", "parsedcomment", "sha1", "logtype", "logaction",
            "log_action_comment", "server_url", "server_name", "server_script_path", "rcid",
            "revid", "logid", "oldlen", "newlen"]  # fmt: skip
xml_ints = st.integers(-5, 3000).map(str) | st.integers(-(2**70), 2**70).map(str)


@st.composite
def rc_elements(draw: st.DrawFn) -> Any:
    """An ``<rc>``: valid required attributes, any others, tags and log parameters."""
    attrs = {
        "wikiid": draw(wikis),
        "type": draw(types),
        "ns": draw(xml_ints),
        "title": draw(xml_text),
        "timestamp": "2026-01-02T03:04:05Z",
    }
    for name in draw(st.sets(st.sampled_from(RC_ATTRS))):
        attrs[name] = draw(xml_ints if name.endswith(("id", "len")) else xml_text)
    element = etree.Element("rc", attrs)
    if draw(st.booleans()):
        tags = etree.SubElement(element, "tags")
        for text in draw(st.lists(xml_text, max_size=3)):
            etree.SubElement(tags, "tag").text = text
    if draw(st.booleans()):
        # JSON text as any sender may write it: NaN, escaped surrogates, deep nesting.
        etree.SubElement(element, "logparams").text = json.dumps(draw(logparams))
    return element


@given(rc_elements())
@SETTINGS
def test_what_the_rc_decoder_accepts_reencodes(element: Any) -> None:
    for change in (
        accepted(change_from_element, element),
        accepted(_datagram, etree.tostring(element)),
    ):
        if change is not None:
            assert_encodes_and_round_trips(change)


def flattened(tag: str, value: Any, depth: int = 0) -> Any:
    """MediaWiki's XML form of a JSON value (as its API printer writes it)."""
    element = etree.Element(tag)
    if isinstance(value, dict) and depth < 30:
        for key, item in value.items():
            name = "k" + "".join(c for c in key if c.isascii() and c.isalnum())
            element.append(flattened(name, item, depth + 1))
    elif isinstance(value, list) and depth < 30:
        for item in value:
            element.append(flattened("_v", item, depth + 1))
    elif value is not None:
        element.text = xml_safe(str(value)).replace("\ufffe", "").replace("\uffff", "")
    return element


@given(types, xml_ints, xml_text, xml_text, logparams)
@SETTINGS
def test_what_the_mediawiki_xml_decoder_accepts_reencodes(
    change_type: str, ns: str, title: str, user: str, params: Any
) -> None:
    element = etree.Element(
        "recentchange",
        {"wiki": "w", "type": change_type, "namespace": ns, "title": title, "user": user,
         "timestamp": "1767322800", "log_type": "block"},
    )  # fmt: skip
    element.append(flattened("log_params", params))
    change = accepted(change_from_recentchange, element)
    if change is not None:
        assert_encodes_and_round_trips(change)
