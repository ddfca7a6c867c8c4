"""Property tests of each decoder on its own input shape: a change or a DecodeError.

`decode_datagram` is fuzzed on raw bytes elsewhere; here each inner decoder
gets structurally valid but arbitrary input (any JSON object, any element and
attributes), the kind that passes the parser and reaches the field checks.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from xmlrc.wire import DecodeError, RecentChange, change_from_element, change_from_json
from xmlrc.wire.apijson import Site, change_from_api
from xmlrc.wire.mwxml import change_from_recentchange

KEYS = [
    "id", "type", "namespace", "title", "comment", "timestamp", "user", "bot", "minor",
    "patrolled", "length", "revision", "log_id", "log_type", "log_action", "log_params",
    "log_action_comment", "server_url", "server_name", "server_script_path", "wiki", "tags",
    "pageid", "userid", "anon", "redirect", "sha1", "parsedcomment", "ns", "rcid", "revid",
    "old_revid", "oldlen", "newlen", "logid", "logtype", "logaction", "logparams",
]  # fmt: skip
ATTRS = [
    "wikiid", "wiki", "type", "ns", "namespace", "title", "timestamp", "user", "rcid", "id",
    "revid", "old_revid", "oldlen", "newlen", "bot", "minor", "patrolled", "unpatrolled",
    "logid", "log_id", "comment",
]  # fmt: skip
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=len(KEYS))
xml_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
).filter(lambda s: all(c in "\t\n\r" or ord(c) >= 32 for c in s))


def decodes_or_refuses(decode: Any, value: Any) -> None:
    try:
        result = decode(value)
    except DecodeError:
        return
    assert isinstance(result, RecentChange)


@given(objects)
@settings(max_examples=400)
def test_json_feed_decoder(data: dict[str, Any]) -> None:
    decodes_or_refuses(change_from_json, data)


@given(objects)
@settings(max_examples=400)
def test_api_decoder(data: dict[str, Any]) -> None:
    decodes_or_refuses(lambda d: change_from_api(d, Site("w")), data)


@given(st.sampled_from(["rc", "{urn:xmlrc:rc:1}rc", "recentchange"]),
       st.dictionaries(st.sampled_from(ATTRS), xml_text, max_size=len(ATTRS)),
       st.lists(st.sampled_from(["tags", "logparams", "length", "revision", "log_params"]),
                max_size=3), xml_text)  # fmt: skip
@settings(max_examples=400)
def test_element_decoders(tag: str, attrs: dict[str, str], children: list[str], text: str) -> None:
    element = etree.Element(tag, attrs)
    for name in children:
        child = etree.SubElement(element, name, {"old": text[:3], "new": text[3:6]})
        child.text = text
    decoder = change_from_recentchange if tag == "recentchange" else change_from_element
    decodes_or_refuses(decoder, element)
