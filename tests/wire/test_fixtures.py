"""Golden tests: every decoder and encoder on the real MediaWiki 1.39 packets.

The oracles are independent of our code: MediaWiki's own IRC line for the
same change, its XML feed for the same change, and the API's answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from lxml import etree

from tests.fixtures import (
    DATA,
    JSON_FEED_PORT,
    JSON_NOBOTS_PORT,
    XML_FEED_PORT,
    api_items,
    irc_lines_without_colours,
    packets,
)
from xmlrc.wire import (
    RecentChange,
    Rejection,
    change_from_element,
    change_from_json,
    change_to_json,
    change_to_line,
    change_to_xml,
    decode_datagram,
)
from xmlrc.wire.apijson import Site, change_from_api

SITE = Site("testwiki", "http://127.0.0.1:8080", "127.0.0.1", "/")


def decoded(port: int) -> list[RecentChange]:
    out = []
    for packet in packets(port):
        change = decode_datagram(packet)
        assert isinstance(change, RecentChange), change
        out.append(change)
    return out


def test_fixture_covers_every_kind_of_change() -> None:
    changes = decoded(JSON_FEED_PORT)
    kinds = {(c.type, c.logtype) for c in changes}
    assert {("edit", None), ("new", None)} <= kinds
    assert {"patrol", "move", "protect", "delete", "block", "newusers"} <= {
        c.logtype for c in changes if c.is_log
    }
    assert any(c.bot for c in changes) and any(c.minor for c in changes)
    assert any(not c.title.isascii() for c in changes)
    assert max(len(c.comment) for c in changes) == 500
    assert any(c.rcid is None for c in changes)  # the manual patrol


def test_json_feed_decodes_to_the_values_mediawiki_sent() -> None:
    by_rcid = {c.rcid: c for c in decoded(JSON_FEED_PORT)}
    edit = by_rcid[14]
    assert edit.wiki == "testwiki" and edit.type == "edit" and edit.ns == 0
    assert edit.title == "Sandbox1795300262"
    assert edit.comment == 'plain edit <b>&amp; "quotes"</b> [[Main Page|link]]'
    assert edit.timestamp == datetime.fromtimestamp(1795300262, UTC)
    assert (edit.old_revid, edit.revid, edit.oldlen, edit.newlen) == (11, 12, 11, 19)
    assert edit.patrolled is True and not edit.bot and not edit.minor
    assert by_rcid[16].bot and by_rcid[15].minor
    assert by_rcid[17].anon and by_rcid[17].patrolled is False  # the IP edit
    new = by_rcid[13]
    assert new.new and new.old_revid is None and new.newlen == 11
    block = by_rcid[25]
    assert block.logtype == "block" and block.logaction == "block" and block.logid == 19
    assert block.logparams == {"duration": "1 day", "flags": "nousertalk", "sitewide": True}
    assert block.patrolled is None  # log actions carry no patrol flag in the feed
    assert by_rcid[23].logparams == []
    patrol = next(c for c in by_rcid.values() if c.logtype == "patrol")
    assert patrol.rcid is None and patrol.stable_id == "testwiki/log/13"


def test_xml_feed_agrees_with_json_feed() -> None:
    for from_json, from_xml in zip(decoded(JSON_FEED_PORT), decoded(XML_FEED_PORT), strict=True):
        if from_json.is_log:
            # The XML printer flattens typed log params (0, "0" and false look alike).
            from_xml = from_xml.with_changes(logparams=from_json.logparams)
        assert from_xml == from_json


def test_nobots_feed_decodes_the_same_changes_minus_the_bot() -> None:
    full = [c for c in decoded(JSON_FEED_PORT) if not c.bot]
    assert decoded(JSON_NOBOTS_PORT) == full


def test_body_line_is_mediawikis_irc_line_without_colours() -> None:
    expected = irc_lines_without_colours()
    lines = [change_to_line(c) for c in decoded(JSON_FEED_PORT) if c.type != "categorize"]
    assert lines == expected


def test_interwiki_prefix_in_body_line() -> None:
    change = decoded(JSON_FEED_PORT)[0]
    assert change_to_line(change, interwiki_prefix="testwiki").startswith(
        "[[testwiki:Sandbox1795300262]] N "
    )


@pytest.mark.parametrize("index", range(14))
def test_every_fixture_change_round_trips_through_every_encoding(index: int) -> None:
    change = decoded(JSON_FEED_PORT)[index]
    element = etree.fromstring(change_to_xml(change))
    assert change_from_element(element) == change
    assert change_from_json(change_to_json(change)) == change
    assert change_from_json(json.loads(json.dumps(change_to_json(change)))) == change


def test_stanza_rc_uses_the_api_attribute_names() -> None:
    change = next(c for c in decoded(JSON_FEED_PORT) if c.rcid == 16)
    element = etree.fromstring(change_to_xml(change))
    assert element.tag == "{urn:xmlrc:rc:1}rc"
    assert dict(element.attrib) == {
        "wikiid": "testwiki",
        "type": "edit",
        "ns": "0",
        "title": "Sandbox1795300262",
        "rcid": "16",
        "revid": "14",
        "old_revid": "13",
        "oldlen": "20",
        "newlen": "27",
        "user": "BridgeBot",
        "timestamp": "2026-11-21T22:31:02Z",
        "comment": "bot edit",
        "server_url": "http://127.0.0.1:8080",
        "server_name": "127.0.0.1",
        "server_script_path": "/",
        "bot": "",
        "patrolled": "",
    }


def test_api_xml_rc_elements_decode_like_the_api_json() -> None:
    root = etree.parse(str(DATA / "api-recentchanges.xml")).getroot()
    elements = list(root.iter("rc"))
    assert len(elements) == len(api_items(2)) > 10
    for element, item in zip(elements, api_items(2), strict=True):
        element.set("wikiid", "testwiki")
        for key in ("server_url", "server_name", "server_script_path"):
            element.set(key, getattr(SITE, key))
        from_xml = change_from_element(element)
        from_json = change_from_api(item, SITE)
        if from_json.is_log:
            from_xml = from_xml.with_changes(logparams=from_json.logparams)
        assert from_xml == from_json


def test_api_formatversions_agree() -> None:
    for fv1, fv2 in zip(api_items(1), api_items(2), strict=True):
        one, two = change_from_api(fv1, SITE), change_from_api(fv2, SITE)
        assert one.with_changes(logparams=None) == two.with_changes(logparams=None)


def test_feed_and_api_agree_on_what_both_carry() -> None:
    api = {c.rcid: c for c in (change_from_api(i, SITE) for i in api_items(2))}
    compared = 0
    for change in decoded(JSON_FEED_PORT):
        if change.rcid is None or change.rcid not in api:
            continue  # the patrol has no rcid; deleting a page removes its rows from the API
        truth = api[change.rcid]
        for name in (
            "type",
            "ns",
            "title",
            "user",
            "comment",
            "timestamp",
            "bot",
            "minor",
            "logid",
            "logtype",
            "logaction",
            "anon",
        ):
            assert getattr(change, name) == getattr(truth, name), (change.rcid, name)
        if not change.is_log:
            # The feed says null where the API says 0 (a new page's old side).
            assert (change.revid, change.old_revid or 0, change.oldlen or 0, change.newlen) == (
                truth.revid,
                truth.old_revid,
                truth.oldlen,
                truth.newlen,
            )
        compared += 1
    assert compared == 12


def test_malformed_fixture_variants_are_rejected_with_a_reason() -> None:
    good = packets(JSON_FEED_PORT)[1]
    for bad, reason in [
        (good[:-5], "bad_json"),
        (good.replace(b'"wiki":"testwiki"', b'"wiki":"evil@wiki"'), "bad_wiki"),
        (good.replace(b'"namespace":0', b'"namespace":"zero"'), "bad_field"),
        (good.replace(b'"title":', b'"titel":'), "missing_field"),
        (packets(XML_FEED_PORT)[1][:-20], "bad_xml"),
    ]:
        result = decode_datagram(bad)
        assert isinstance(result, Rejection), bad
        assert result.reason.value == reason, result
