"""`rcclient.audit.compare`: a room's archive against the wiki's record, pure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta

import pytest

from rcclient.audit import (
    FEEDS,
    Window,
    archived_distrust,
    compare,
    default_fields,
    parse_fields,
)
from tests.rcclient.util import EPOCH, change
from xmlrc.wire import RecentChange
from xmlrc.wire.model import FIELD_NAMES

#: rcids 1..100 fall at EPOCH + rcid seconds: this window holds 10..20.
WINDOW = Window(EPOCH + timedelta(seconds=10), EPOCH + timedelta(seconds=20), "testwiki")
FIELDS = default_fields("mediawiki")


def wiki_row(rcid: int, **fields: object) -> RecentChange:
    """The API's view of change `rcid`: what the feeds lack, filled in."""
    values: dict[str, object] = {"pageid": 7, "userid": 3, "tags": ("mw-x",), "sha1": "ab" * 20}
    values.update(fields)
    return change("testwiki", rcid, **values)


def fed(row: RecentChange) -> RecentChange:
    """What the MediaWiki UDP feed makes of `row`: no pageid, userid, tags, sha1."""
    return replace(row, pageid=None, userid=None, tags=None, sha1=None, parsedcomment=None)


def rows(*rcids: int) -> list[RecentChange]:
    return [wiki_row(rcid) for rcid in rcids]


def test_identical_records_match() -> None:
    expected = rows(*range(10, 21))
    report = compare([fed(r) for r in expected], expected, FIELDS, window=WINDOW)
    assert report.ok
    assert report.counts() == {
        "archived": 11,
        "expected": 11,
        "matched": 11,
        "missing": 0,
        "extra": 0,
        "duplicated": 0,
        "differing": 0,
        "unrecorded": 0,
    }
    assert report.text().endswith("result: the room matches the wiki")


def test_missing_changes_are_listed_in_time_order() -> None:
    expected = rows(*range(10, 21))
    archived = [fed(r) for r in expected if r.rcid not in (12, 17, 13)]
    report = compare(archived, expected, FIELDS, window=WINDOW)
    assert not report.ok
    assert [c.rcid for c in report.missing] == [12, 13, 17]
    assert (report.extra, report.duplicated, report.differing) == ([], [], [])
    assert report.counts()["matched"] == 8
    assert "missing from the room: 3\n  testwiki/12 " in report.text()
    assert report.text().endswith("result: MISMATCH (3 missing)")


def test_extra_changes_are_those_the_wiki_does_not_know() -> None:
    expected = rows(10, 11)
    archived = [fed(r) for r in [*expected, *rows(15, 16)]]
    report = compare(archived, expected, FIELDS, window=WINDOW)
    assert [c.stable_id for c in report.extra] == ["testwiki/15", "testwiki/16"]
    assert report.missing == []
    assert report.counts()["archived"] == 4


def test_changes_no_recentchanges_row_can_hold_are_listed_not_a_mismatch() -> None:
    """Abuse filter hits (EventStreams carries them) have no rcid and log id 0: the
    wiki's recentchanges never lists them, so they cannot be audited either way."""
    expected = rows(10, 11)
    hit = replace(
        change("testwiki", 1), rcid=None, type="log", logid=0, logtype="abusefilter",
        logaction="hit", timestamp=EPOCH + timedelta(seconds=12),
        logparams={"filter": 79, "log": 11639581},
    )  # fmt: skip
    report = compare([*(fed(r) for r in expected), hit], expected, FIELDS, window=WINDOW)
    assert report.ok
    assert report.unrecorded == [hit] and report.extra == []
    assert report.counts()["unrecorded"] == 1
    assert report.to_json()["unrecorded"][0]["id"] == hit.stable_id


def test_a_stable_id_archived_twice_is_a_duplicate_once() -> None:
    expected = rows(10, 11, 12)
    archived = [fed(r) for r in [*expected, expected[1], expected[1], *rows(14, 14)]]
    report = compare(archived, expected, FIELDS, window=WINDOW)
    assert [(c.stable_id, n) for c, n in report.duplicated] == [
        ("testwiki/11", 3),
        ("testwiki/14", 2),  # an extra one, twice
    ]
    assert [c.rcid for c in report.extra] == [14]
    assert report.counts()["archived"] == 4  # each id counted once
    assert "testwiki/11 " in report.text() and ": 3 copies" in report.text()


def test_differing_fields_name_both_values() -> None:
    expected = rows(10, 11)
    archived = [fed(expected[0]), replace(fed(expected[1]), title="Other", newlen=5, bot=True)]
    report = compare(archived, expected, FIELDS, window=WINDOW)
    (difference,) = report.differing
    assert difference.change.rcid == 11
    assert dict(difference.fields) == {
        "title": ("Other", "Page 11"),
        "bot": (True, False),
        "newlen": (5, 1004),
    }
    assert list(difference.fields) == ["title", "newlen", "bot"]  # the model's order
    assert report.counts()["matched"] == 1
    assert "    title: room 'Other', wiki 'Page 11'" in report.text()


def test_only_the_chosen_fields_are_compared() -> None:
    expected = rows(10)
    archived = [replace(fed(expected[0]), comment="changed", title="Changed")]
    report = compare(archived, expected, ("title",), window=WINDOW)
    assert [list(d.fields) for d in report.differing] == [["title"]]
    assert compare(archived, expected, ("rcid", "user"), window=WINDOW).ok
    with pytest.raises(ValueError, match="no such field"):
        compare(archived, expected, ("nonsense",), window=WINDOW)


def test_window_edges_are_inclusive_by_the_changes_own_timestamps() -> None:
    # rcid 9 is a second before, 21 a second after; 10 and 20 are on the edges.
    expected = rows(9, 10, 20, 21)
    archived = [fed(r) for r in rows(8, 10, 20, 22)]  # 8 and 22: outside, unknown to the API
    report = compare(archived, expected, FIELDS, window=WINDOW)
    assert report.ok, report.text()
    assert (report.expected, report.archived) == (2, 2)
    # Without 10 and 20 in the room, exactly those two are missing.
    report = compare([fed(r) for r in rows(9, 21)], expected, FIELDS, window=WINDOW)
    assert [c.rcid for c in report.missing] == [10, 20]
    # An archived copy outside the window of a change the API places inside is
    # matched by id: a difference in timestamp, not one missing and one extra.
    late = replace(fed(wiki_row(15)), timestamp=EPOCH + timedelta(hours=1))
    report = compare([late], [wiki_row(15)], FIELDS, window=WINDOW)
    assert (report.missing, report.extra) == ([], [])
    assert list(report.differing[0].fields) == ["timestamp"]


def test_other_wikis_in_the_room_are_out_of_scope() -> None:
    expected = rows(10)
    other = change("otherwiki", 10)
    report = compare([fed(expected[0]), other, other], expected, FIELDS, window=WINDOW)
    assert report.ok
    anywiki = replace(WINDOW, wiki=None)
    report = compare([fed(expected[0]), other, other], expected, FIELDS, window=anywiki)
    assert [c.stable_id for c in report.extra] == ["otherwiki/10"]
    assert [n for _c, n in report.duplicated] == [2]


def test_the_mediawiki_feeds_absences_are_excused_not_their_values() -> None:
    row = wiki_row(10, old_revid=0, oldlen=0, autopatrolled=True, redirect=True)
    feed = replace(fed(row), old_revid=None, oldlen=None, autopatrolled=False, redirect=False)
    every = FIELD_NAMES  # even when asked to compare them all
    every_but = tuple(n for n in every if n != "log_action_comment")
    assert compare([feed], [row], every_but, window=WINDOW).ok
    # A value the feed does carry must agree.
    wrong = replace(feed, old_revid=5, tags=("other",))
    (difference,) = compare([wrong], [row], every_but, window=WINDOW).differing
    assert list(difference.fields) == ["old_revid", "tags"]
    # rc2udp reads the API itself: nothing is excused.
    (difference,) = compare([feed], [row], every_but, window=WINDOW, feed="rc2udp").differing
    assert set(difference.fields) == {
        "pageid", "userid", "tags", "sha1", "old_revid", "oldlen", "autopatrolled", "redirect",
    }  # fmt: skip


def test_log_actions_lack_revisions_patrol_flags_and_typed_params_in_the_feeds() -> None:
    row = wiki_row(
        10, type="log", logtype="block", logaction="block", logid=4, patrolled=False,
        logparams={"duration": "1 day", "flags": []}, revid=0, old_revid=0, oldlen=0, newlen=0,
    )  # fmt: skip
    feed = replace(
        fed(row), revid=None, old_revid=None, oldlen=None, newlen=None, patrolled=None,
        logparams={"5::duration": "1 day", "6::flags": ""}, log_action_comment="blocked",
    )  # fmt: skip
    assert compare([feed], [row], FIELDS, window=WINDOW).ok
    assert "log_action_comment" not in FIELDS
    (difference,) = compare([replace(feed, logtype="x")], [row], FIELDS, window=WINDOW).differing
    assert list(difference.fields) == ["logtype"]


def test_default_fields_per_feed() -> None:
    mediawiki, rc2udp = (set(default_fields(feed)) for feed in FEEDS)
    for name in ("pageid", "userid", "tags", "sha1", "parsedcomment", "autopatrolled"):
        assert name in rc2udp and name not in mediawiki
    for name in ("redirect", "log_action_comment"):
        assert name not in rc2udp | mediawiki
    assert {"wiki", "type", "title", "timestamp", "rcid", "revid", "comment"} <= mediawiki


def test_parse_fields_lists_or_changes_the_defaults() -> None:
    assert parse_fields("title, user,title", "mediawiki") == ("title", "user")
    added = parse_fields("+tags,-comment", "mediawiki")
    assert "tags" in added and "comment" not in added
    assert set(added) == (set(FIELDS) | {"tags"}) - {"comment"}
    for bad, message in (
        ("", "give field names"),
        ("title,+tags", "either names"),
        ("titel", "no such field: 'titel'"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_fields(bad, "mediawiki")


def test_json_report_is_one_plain_document() -> None:
    expected = rows(10, 11, 12)
    archived = [fed(expected[0]), fed(expected[0]), replace(fed(expected[1]), tags=("t",))]
    report = compare(archived, expected, (*FIELDS, "tags"), window=WINDOW)
    document = json.loads(json.dumps(report.to_json()))
    assert document["match"] is False
    assert document["since"] == "2026-03-01T12:00:10Z"
    assert document["counts"] == {
        "archived": 2,
        "expected": 3,
        "matched": 1,
        "missing": 1,
        "extra": 0,
        "duplicated": 1,
        "differing": 1,
        "unrecorded": 0,
    }
    assert [m["id"] for m in document["missing"]] == ["testwiki/12"]
    assert document["missing"][0]["timestamp"] == "2026-03-01T12:00:12Z"
    assert document["duplicated"][0]["copies"] == 2
    assert document["differing"][0]["fields"] == {"tags": {"room": ["t"], "wiki": ["mw-x"]}}


def _message(sender: str, affiliation: str | None = None, jid: str | None = None) -> ET.Element:
    message = ET.Element("{jabber:client}message", {"from": sender, "type": "groupchat"})
    if affiliation is not None or jid is not None:
        x = ET.SubElement(message, "{http://jabber.org/protocol/muc#user}x")
        attributes = {"affiliation": affiliation or "owner", **({"jid": jid} if jid else {})}
        ET.SubElement(x, "{http://jabber.org/protocol/muc#user}item", attributes)
    return message


def test_archived_trust_follows_the_publisher_rules() -> None:
    room = "testwiki@conference.localhost"
    assert archived_distrust(_message(f"{room}/rcbot"), room, "rcbot") is None
    assert archived_distrust(_message(f"{room}/mallory"), room, "rcbot") is not None
    assert archived_distrust(_message("other@conference.localhost/rcbot"), room, "rcbot")
    assert archived_distrust(_message(f"{room}/rcbot", "member"), room, "rcbot") is not None
    owner = _message(f"{room}/rcbot", "owner", "rcbot@localhost/x")
    assert archived_distrust(owner, room, "rcbot", "rcbot@localhost") is None
    assert archived_distrust(owner, room, "rcbot", "bridge@localhost") is not None


def test_archived_trust_accepts_any_of_a_bridge_pairs_accounts() -> None:
    room = "testwiki@conference.localhost"
    first = _message(f"{room}/rcbot", "owner", "rcbot@localhost/pair")
    second = _message(f"{room}/rcbot", "owner", "RCBot2@Localhost/pair")  # case is not identity
    pair = ["rcbot2@localhost", "rcbot@localhost"]
    for message in (first, second):
        assert archived_distrust(message, room, "rcbot", pair) is None
        assert archived_distrust(message, room, "rcbot", iter(pair)) is None
        assert archived_distrust(message, room, "rcbot", frozenset(pair)) is None
    assert archived_distrust(second, room, "rcbot", "rcbot@localhost") == (
        "sent by 'rcbot' as rcbot2@localhost, not as rcbot@localhost"
    )
    other = _message(f"{room}/rcbot", "owner", "mallory@localhost/x")
    assert archived_distrust(other, room, "rcbot", ["rcbot@localhost", "rcbot2@localhost/r"]) == (
        "sent by 'rcbot' as mallory@localhost, not as rcbot2@localhost or rcbot@localhost"
    )
    # Where the archive records no real JID, only the nick and affiliation are checked.
    assert archived_distrust(_message(f"{room}/rcbot", "owner"), room, "rcbot", pair) is None
    # No accounts (None, "", an empty list): the JID is not checked, as before.
    for nobody in (None, "", []):
        assert archived_distrust(other, room, "rcbot", nobody) is None
    with pytest.raises(ValueError, match="not a JID"):
        archived_distrust(first, room, "rcbot", ["rcbot@localhost", ""])
    with pytest.raises(TypeError, match="expected JIDs"):
        archived_distrust(first, room, "rcbot", [b"rcbot@localhost"])  # type: ignore[list-item]
