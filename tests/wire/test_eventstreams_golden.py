"""Golden tests: the 50 recorded Wikimedia EventStreams events (tests/data/eventstreams,
README there names each one's source) decode field-exact through the one JSON decoder.

Every field of every event is checked against the recorded JSON by the schema's
mapping (written out here, independently of the decoder), and four events are
spelled out in full. The SSE-enveloped frames carry the same data as the lines.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from xmlrc.wire import RecentChange
from xmlrc.wire.jsonfeed import change_from_json, change_from_json_bytes, change_to_json

DATA = Path(__file__).resolve().parent.parent / "data" / "eventstreams"
LINES = (DATA / "recentchange.jsonl").read_text(encoding="utf-8").splitlines()
EVENTS = [json.loads(line) for line in LINES]

#: RecentChange field -> how it reads from a recentchange event (None: absent).
MAPPING: dict[str, Any] = {
    "wiki": lambda e: e["wiki"],
    "type": lambda e: e["type"],
    "ns": lambda e: e["namespace"],
    "title": lambda e: e["title"],
    "timestamp": lambda e: datetime.fromtimestamp(e["timestamp"], UTC),
    "user": lambda e: e["user"],
    "rcid": lambda e: e.get("id"),
    "pageid": lambda e: None,  # not in the schema
    "revid": lambda e: e.get("revision", {}).get("new"),
    "old_revid": lambda e: e.get("revision", {}).get("old"),
    "userid": lambda e: None,
    "oldlen": lambda e: e.get("length", {}).get("old"),
    "newlen": lambda e: e.get("length", {}).get("new"),
    "comment": lambda e: e["comment"],
    "parsedcomment": lambda e: e.get("parsedcomment"),
    "anon": lambda e: ":" in e["user"] or e["user"].replace(".", "").isdigit(),
    "bot": lambda e: e["bot"],
    "minor": lambda e: e.get("minor", False),
    "redirect": lambda e: False,
    "patrolled": lambda e: e.get("patrolled"),
    "autopatrolled": lambda e: False,
    "tags": lambda e: None,
    "sha1": lambda e: None,
    "logid": lambda e: e.get("log_id"),
    "logtype": lambda e: e.get("log_type"),
    "logaction": lambda e: e.get("log_action"),
    "logparams": lambda e: e.get("log_params"),
    "log_action_comment": lambda e: e.get("log_action_comment"),
    "server_url": lambda e: e["server_url"],
    "server_name": lambda e: e["server_name"],
    "server_script_path": lambda e: e["server_script_path"],
}


def test_the_mapping_names_every_field_of_the_model() -> None:
    assert list(MAPPING) == [f.name for f in fields(RecentChange)]


@pytest.mark.parametrize("number", range(1, len(EVENTS) + 1))
def test_every_recorded_event_decodes_field_by_field(number: int) -> None:
    event = EVENTS[number - 1]
    change = change_from_json_bytes(LINES[number - 1].encode())
    for name, read in MAPPING.items():
        assert getattr(change, name) == read(event), f"line {number}: {name}"
    assert change.page_url is not None
    assert change.page_url.startswith(event["server_url"] + "/w/index.php?title=")


def test_the_counts_the_fixture_readme_states() -> None:
    changes = [change_from_json(e) for e in EVENTS]
    types = {t: sum(c.type == t for c in changes) for t in ("edit", "new", "log", "categorize")}
    assert types == {"edit": 26, "new": 4, "log": 10, "categorize": 10}
    assert sum(c.bot for c in changes) == 16
    assert sum(c.wiki == "wikidatawiki" for c in changes) == 11
    assert [n for n, c in enumerate(changes, 1) if c.user_is_ip] == [4, 6, 18, 20, 31, 46]


def test_an_anonymous_edit_in_full() -> None:  # line 6, enwiki, IPv6 user, no patrolled
    assert change_from_json(EVENTS[5]) == RecentChange(
        wiki="enwiki", type="edit", ns=0, title="Bernie Ecclestone",
        timestamp=datetime(2021, 9, 15, 12, 57, 6, tzinfo=UTC),
        user="2A02:C7F:2CA7:F700:DC87:1AF6:9C2B:4497", rcid=1423007653,
        revid=1044480964, old_revid=1043848398, oldlen=59388, newlen=59393,
        comment="/* Racial statement */Fixed typo",
        parsedcomment='<span dir="auto"><span class="autocomment"><a href="/wiki/Bernie_'
        'Ecclestone#Racial_statement" title="Bernie Ecclestone">→\u200eRacial statement</a>:'
        " </span>Fixed typo</span>",
        anon=True, bot=False, minor=False, patrolled=None,
        server_url="https://en.wikipedia.org", server_name="en.wikipedia.org",
        server_script_path="/w",
    )  # fmt: skip


def test_an_abuse_filter_hit_in_full() -> None:  # line 4: no rcid, log_id 0
    change = change_from_json(EVENTS[3])
    assert change == RecentChange(
        wiki="wikidatawiki", type="log", ns=0, title="Q881745",
        timestamp=datetime(2020, 2, 2, 13, 5, 24, tzinfo=UTC),
        user="2A01:E0A:1C8:9A00:F0C3:F1E2:400B:11B2", rcid=None, comment="",
        parsedcomment="", anon=True, bot=False, logid=0, logtype="abusefilter",
        logaction="hit",
        logparams={"action": "edit", "filter": 79, "actions": "tag", "log": 11639581},
        log_action_comment="2A01:E0A:1C8:9A00:F0C3:F1E2:400B:11B2 triggered "
        "[[Special:AbuseFilter/79|filter 79]], performing the action \"edit\" on [[Q881745]]. "
        "Actions taken: Tag ([[Special:AbuseLog/11639581|details]])",
        server_url="https://www.wikidata.org", server_name="www.wikidata.org",
        server_script_path="/w",
    )  # fmt: skip
    # No rcid and log id 0: the stable id is a hash that includes the abuse log's id.
    assert change.stable_id.startswith("wikidatawiki/h/")
    other = dataclasses.replace(change, logparams={**change.logparams, "log": 11639582})
    assert other.stable_id != change.stable_id


def test_an_upload_with_newlines_and_entities() -> None:  # line 12
    change = change_from_json(EVENTS[11])
    assert (change.rcid, change.logid, change.logtype, change.logaction) == (
        2202323770, 339161257, "upload", "upload",
    )  # fmt: skip
    assert change.ns == 6 and change.title.startswith("File:Wissensturm Linz")
    raw_comment = LINES[11].split('"comment":"', 1)[1].split('","timestamp"', 1)[0]
    assert change.comment.count("\n") == raw_comment.count("\\n") == 28
    assert change.log_action_comment is not None
    assert change.log_action_comment.startswith("uploaded &quot;[[File:Wissensturm")
    assert change.logparams == {
        "img_sha1": "n7p91uyt4hcqqq8s0snqrsfdfc75xfx",
        "img_timestamp": "20230525141053",
    }
    assert change.revid is None and change.oldlen is None


def test_a_2026_categorize_event_in_full() -> None:  # line 49: codfw, millisecond dt
    assert change_from_json(EVENTS[48]) == RecentChange(
        wiki="commonswiki", type="categorize", ns=14, title="Category:CC-BY-4.0",
        timestamp=datetime(2026, 2, 14, 11, 50, 31, tzinfo=UTC), user="MBH",
        rcid=3196239272,
        comment="[[:File:Bridge over Petrovsky Canal 04.jpg]] added to category",
        parsedcomment='<a href="/wiki/File:Bridge_over_Petrovsky_Canal_04.jpg" '
        'title="File:Bridge over Petrovsky Canal 04.jpg">File:Bridge over Petrovsky Canal '
        "04.jpg</a> added to category",
        server_url="https://commons.wikimedia.org", server_name="commons.wikimedia.org",
        server_script_path="/w",
    )  # fmt: skip


@pytest.mark.parametrize("number", range(1, len(EVENTS) + 1))
def test_each_event_survives_the_json_encoder(number: int) -> None:
    change = change_from_json(EVENTS[number - 1])
    assert change_from_json(change_to_json(change)) == change


def test_the_sse_frames_carry_the_lines_and_ids_a_millisecond_after_meta_dt() -> None:
    frames = (DATA / "recentchange.sse").read_text(encoding="utf-8").split("\n\n")
    frames = [f for f in frames if f.strip()]
    assert len(frames) == 8
    for frame, number in zip(frames, (6, 7, 8, 9, 10, 23, 25, 49), strict=True):
        fields_ = dict(line.split(": ", 1) for line in frame.splitlines())
        assert fields_["event"] == "message"
        assert fields_["data"] == LINES[number - 1]
        position = json.loads(fields_["id"])
        dt = EVENTS[number - 1]["meta"]["dt"]
        ms = round(datetime.fromisoformat(dt.replace("Z", "+00:00")).timestamp() * 1000)
        assert [p["timestamp"] for p in position if "timestamp" in p] == [ms + 1]
