"""Routing by the config: per-wiki rooms and overrides, the unknown-wiki policy, the
all-wikis room and filtered rooms. Pure: config dict in, (change, rooms) out."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from udp2xmpp.config import ConfigError, parse_config
from udp2xmpp.route import ChangeFilter, Router, RoutingError, UnknownWikiError
from xmlrc.wire import RecentChange

SERVICE = "conference.example.org"


def router(rooms: dict[str, Any] | None = None, **sections: Any) -> Router:
    """The Router of a config with these [rooms] keys and other sections (wikis=...)."""
    data: dict[str, Any] = {
        "xmpp": {"jid": "rcbot@example.org", "password": "pw"},
        "rooms": {"service": SERVICE, **(rooms or {})},
        **sections,
    }
    return Router.from_settings(parse_config(data).rooms)


def change(wiki: str = "enwiki", **fields: Any) -> RecentChange:
    values: dict[str, Any] = {
        "type": "edit",
        "ns": 0,
        "title": "Some page",
        "user": "Alice",
        "rcid": 1,
        "oldlen": 100,
        "newlen": 110,
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    values.update(fields)
    return RecentChange(wiki=wiki, **values)


def names(router: Router, c: RecentChange) -> list[str]:
    return [room.jid.removesuffix("@" + SERVICE) for room in router.rooms_for(c)]


def filtered(**conditions: Any) -> Router:
    """A router with one filtered room "f" on these conditions."""
    return router({"filtered": [{"room": "f", **conditions}]})


# -- every filter key, one at a time: (conditions, a change that matches, one that does not)
FILTER_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"wiki": "dewiki"}, {"wiki": "dewiki"}, {"wiki": "enwiki"}),
    ({"wiki": ["dewiki", "frwiki"]}, {"wiki": "frwiki"}, {"wiki": "enwiki"}),
    ({"type": "new"}, {"type": "new"}, {"type": "edit"}),
    ({"type": ["new", "log"]}, {"type": "log"}, {"type": "categorize"}),
    ({"ns": 0}, {"ns": 0}, {"ns": 1}),
    ({"ns": [2, 3]}, {"ns": 3}, {"ns": 0}),
    ({"bot": True}, {"bot": True}, {"bot": False}),
    ({"bot": False}, {"bot": False}, {"bot": True}),
    ({"minor": True}, {"minor": True}, {"minor": False}),
    ({"minor": False}, {"minor": False}, {"minor": True}),
    ({"user": "Bob"}, {"user": "Bob"}, {"user": "bob"}),
    ({"user": ["Bob", "Carol"]}, {"user": "Carol"}, {"user": "Alice"}),
    ({"title_regex": "^Talk:"}, {"title": "Talk:Foo"}, {"title": "Foo Talk:"}),
    ({"title_regex": "(?i)sandbox"}, {"title": "User:A/SandBox"}, {"title": "Sand box"}),
    ({"min_change": 500}, {"oldlen": 0, "newlen": 500}, {"oldlen": 0, "newlen": 499}),
    ({"max_change": -500}, {"oldlen": 600, "newlen": 100}, {"oldlen": 600, "newlen": 101}),
    # A page creation's size change is its length; an unknown size never matches a bound.
    ({"min_change": 100}, {"type": "new", "oldlen": None, "newlen": 100}, {"newlen": None}),
    ({"max_change": 100}, {"newlen": 50}, {"type": "log", "oldlen": None, "newlen": None}),
    # The engine's (xmlrc.filters) other conditions, new in filtered rooms.
    ({"title_glob": "List_of_*"}, {"title": "List of cats"}, {"title": "A List of cats"}),
    ({"min_abs_change": 500}, {"oldlen": 600, "newlen": 100}, {"oldlen": 0, "newlen": 499}),
]


@pytest.mark.parametrize(("conditions", "matching", "other"), FILTER_CASES)
def test_each_filter_key(
    conditions: dict[str, Any], matching: dict[str, Any], other: dict[str, Any]
) -> None:
    r = filtered(**conditions)
    yes, no = change(**matching), change(**other)
    assert names(r, yes) == [yes.wiki, "f"]
    assert names(r, no) == [no.wiki]
    room_filter = r.filtered[0][0]
    assert room_filter.matches(yes) and not room_filter.matches(no)


def test_keys_combine_with_and_values_with_or() -> None:
    r = filtered(
        wiki="enwiki",
        type=["new", "edit"],
        ns=[0, 4],
        bot=False,
        minor=False,
        user=["Alice", "Bob"],
        title_regex="^[A-M]",
        min_change=-100,
        max_change=100,
    )
    base: dict[str, Any] = {"type": "new", "ns": 4, "user": "Bob", "title": "Apple"}
    assert names(r, change(**base)) == ["enwiki", "f"]
    assert names(r, change(**base, oldlen=200)) == ["enwiki", "f"]  # -90: within the bounds
    # Each condition alone spoils the match.
    for spoiler in (
        {"wiki": "dewiki"},
        {"type": "log"},
        {"ns": 1},
        {"bot": True},
        {"minor": True},
        {"user": "Mallory"},
        {"title": "Zebra"},
        {"newlen": 300},
        {"oldlen": 300},
    ):
        c = change(**{**base, **spoiler})
        assert names(r, c) == [c.wiki], spoiler


def test_one_change_goes_to_several_rooms_in_config_order() -> None:
    r = router(
        {
            "all_room": "everything",
            "filtered": [
                {"room": "en-new", "wiki": "enwiki", "type": "new", "ns": 0},
                {"room": "humans", "bot": False},
                {"room": "de-only", "wiki": "dewiki"},
                {"room": "big", "min_change": 1000},
            ],
        }
    )
    new_article = change(type="new", oldlen=None, newlen=5000)
    assert names(r, new_article) == ["enwiki", "everything", "en-new", "humans", "big"]
    assert names(r, change("dewiki", bot=True)) == ["dewiki", "everything", "de-only"]
    rooms = r.rooms_for(new_article)
    assert len({room.jid for room in rooms}) == len(rooms)  # never twice the same room
    everything = rooms[1]
    assert (everything.title, everything.description) == (
        "All wikis",
        "Recent changes of every wiki, from xmlrc",
    )
    en_new = rooms[2]
    assert en_new.title == "en-new"
    assert en_new.description == "Recent changes: wiki enwiki, type new, ns 0, from xmlrc"


def test_filtered_room_title_description_and_membership() -> None:
    r = filtered(
        type="new",
        room_title="New pages",
        description="Every page creation",
        members_only=True,
        members=["Bob@Example.org", "carol@example.org"],
    )
    (_, spec) = r.filtered[0]
    assert (spec.jid, spec.title, spec.description) == (
        f"f@{SERVICE}",
        "New pages",
        "Every page creation",
    )
    assert spec.members_only and spec.members == ("bob@example.org", "carol@example.org")


def test_unknown_wikis_are_created_by_default_and_dropped_when_asked() -> None:
    create = router({"wikis": ["enwiki"], "all_room": "all"})
    assert names(create, change("xxwiki")) == ["xxwiki", "all"]
    drop = router({"wikis": ["enwiki"], "all_room": "all", "unknown_wikis": "drop"})
    assert names(drop, change("enwiki")) == ["enwiki", "all"]
    with pytest.raises(UnknownWikiError) as info:
        drop.route(change("xxwiki"))
    assert info.value.reason == "unknown_wiki"
    # A wiki listed only under [wikis.NAME] is known too; IDs are compared exactly.
    listed = router({"unknown_wikis": "drop"}, wikis={"dewiki": {"title": "Deutsch"}})
    assert names(listed, change("dewiki")) == ["dewiki"]
    with pytest.raises(UnknownWikiError):
        listed.route(change("DEwiki"))


def test_rooms_at_startup_are_every_room_the_config_names() -> None:
    r = router(
        {"wikis": ["enwiki", "dewiki"], "all_room": "all", "filtered": [{"room": "f", "ns": 0}]},
        wikis={"dewiki": {"room": "de"}, "frwiki": {}},
    )
    assert [room.jid.partition("@")[0] for room in r.static_rooms] == [
        "enwiki",
        "de",
        "frwiki",
        "all",
        "f",
    ]
    assert router({}).static_rooms == ()


def test_wiki_overrides_name_title_description_and_membership() -> None:
    r = router(
        {"room": "rc-{wiki}", "all_room": "all"},
        wikis={
            "enwiki": {"room": "en", "title": "English Wikipedia", "description": "All of en"},
            "secretwiki": {"members_only": True, "members": ["Bob@example.org"]},
        },
    )
    (own, _all) = r.rooms_for(change("enwiki"))
    assert (own.jid, own.title, own.description) == (
        f"en@{SERVICE}",
        "English Wikipedia",
        "All of en",
    )
    assert not own.members_only and own.members == ()
    (secret,) = r.rooms_for(change("secretwiki"))  # a private wiki: not in the all-wikis room
    assert secret.jid == f"rc-secretwiki@{SERVICE}" and secret.title == "secretwiki"
    assert secret.description == "Recent changes of secretwiki, from xmlrc"
    assert secret.members_only and secret.members == ("bob@example.org",)


def test_private_wiki_changes_reach_only_rooms_that_name_it() -> None:
    r = router(
        {
            "all_room": "all",
            "filtered": [
                {"room": "new-anywhere", "type": "new"},
                {"room": "secret-new", "wiki": "secretwiki", "type": "new", "members_only": True},
            ],
        },
        wikis={"secretwiki": {"members_only": True}},
    )
    assert names(r, change("secretwiki", type="new")) == ["secretwiki", "secret-new"]
    assert names(r, change("enwiki", type="new")) == ["enwiki", "all", "new-anywhere"]


def test_server_fields_filled_only_where_missing() -> None:
    r = router(
        {},
        wikis={"enwiki": {"server_url": "https://en.wikipedia.org", "server_script_path": "/w"}},
    )
    bare = change(revid=12, old_revid=11)
    routed, _rooms = r.route(bare)
    assert routed.server_url == "https://en.wikipedia.org"
    assert routed.server_name == "en.wikipedia.org"
    assert routed.server_script_path == "/w"
    assert routed.diff_url == "https://en.wikipedia.org/w/index.php?diff=12&oldid=11"
    assert bare.server_url is None  # pure: the input is untouched
    assert routed == bare.with_changes(
        server_url="https://en.wikipedia.org",
        server_name="en.wikipedia.org",
        server_script_path="/w",
    )
    # What the datagram says wins ("" is a script path: the server's root); a change
    # that lacks nothing comes back as the same object.
    given = change(server_url="http://mirror", server_name="mirror", server_script_path="")
    assert r.route(given)[0] is given
    partial = change(server_url="", server_script_path="/x")
    routed, _rooms = r.route(partial)
    assert (routed.server_url, routed.server_name, routed.server_script_path) == (
        "https://en.wikipedia.org",
        "en.wikipedia.org",
        "/x",
    )
    elsewhere = change(server_url="http://mirror")  # its own URL: no host name from ours
    assert r.route(elsewhere)[0].server_name is None
    # Another wiki, no override: nothing filled.
    assert r.route(change("dewiki"))[0].server_url is None
    # An empty script path (a wiki at the server's root) is a value too.
    root = router({}, wikis={"w": {"server_url": "http://w.example", "server_script_path": ""}})
    assert (
        root.route(change("w", revid=2))[0].diff_url == "http://w.example/index.php?diff=2&oldid=0"
    )


def test_an_unknown_wiki_cannot_take_a_room_the_config_reserves() -> None:
    r = router(
        {"all_room": "all", "filtered": [{"room": "en-new", "type": "new"}]},
        wikis={"enwiki": {"room": "en"}},
    )
    for wiki in ("all", "en-new", "en", "EN"):
        with pytest.raises(RoutingError, match="reserved") as info:
            r.route(change(wiki))
        assert info.value.reason == "bad_room"
    assert names(r, change("ENWIKI")) == ["enwiki", "all"]  # not enwiki's room ("en")


@pytest.mark.parametrize("template", ["{wiki}@evil.org", "{wiki}/res", "a b {wiki}"])
def test_templates_that_would_escape_the_service_are_refused(template: str) -> None:
    with pytest.raises(RoutingError):
        Router(SERVICE, template).route(change())


def test_filters_are_compiled_once_at_load() -> None:
    r = filtered(title_regex="^Talk:", user=["A", "B"], ns=[1, 1, 3])
    room_filter = r.filtered[0][0]
    assert isinstance(room_filter.title_regex, re.Pattern)
    assert room_filter.users == frozenset({"A", "B"})
    assert room_filter.namespaces == frozenset({1, 3})
    assert ChangeFilter().is_empty and not room_filter.is_empty


@pytest.mark.parametrize(
    ("rooms", "wikis", "message"),
    [
        ({"unknown_wikis": "ignore"}, None, 'rooms.unknown_wikis: must be "create" or "drop"'),
        ({"all_room": "All Wikis"}, None, "rooms.all_room: 'All Wikis' is not an allowed room"),
        ({"all_room": 3}, None, "rooms.all_room: must be a non-empty string"),
        ({"filtered": {"room": "x"}}, None, "rooms.filtered: must be an array of tables"),
        ({"filtered": ["x"]}, None, r"rooms.filtered\[0\]: must be a table"),
        ({"filtered": [{"type": "new"}]}, None, r"rooms.filtered\[0\].room: required"),
        ({"filtered": [{"room": "x"}]}, None, r"rooms.filtered\[0\]: no condition"),
        (
            {"filtered": [{"room": "a", "ns": 0}, {"room": "b", "title_regex": "(unclosed"}]},
            None,
            r"rooms.filtered\[1\].title_regex: bad regex '\(unclosed': missing \)",
        ),
        ({"filtered": [{"room": "x", "title": "^A"}]}, None, r"rooms.filtered\[0\].title: ambig"),
        ({"filtered": [{"room": "x", "type": "edits"}]}, None, r"\[0\].type: 'edits' is not a"),
        ({"filtered": [{"room": "x", "type": []}]}, None, r"\[0\].type: an empty list"),
        ({"filtered": [{"room": "x", "ns": "0"}]}, None, r"\[0\].ns: namespace numbers"),
        ({"filtered": [{"room": "x", "ns": True}]}, None, r"\[0\].ns: namespace numbers"),
        ({"filtered": [{"room": "x", "bot": "no"}]}, None, r"\[0\].bot: must be true or false"),
        ({"filtered": [{"room": "x", "minor": 0}]}, None, r"\[0\].minor: must be true or false"),
        ({"filtered": [{"room": "x", "user": [1]}]}, None, r"\[0\].user: must be a string or"),
        ({"filtered": [{"room": "x", "wiki": "a b"}]}, None, r"\[0\].wiki: 'a b' is not a valid"),
        ({"filtered": [{"room": "x", "min_change": 1.5}]}, None, r"\[0\].min_change: must be an"),
        (
            {"filtered": [{"room": "x", "min_change": 10, "max_change": -10}]},
            None,
            r"\[0\].max_change: -10 is below min_change 10",
        ),
        ({"filtered": [{"room": "x", "ns": 0, "colour": 1}]}, None, r"\[0\].colour: unknown key"),
        ({"filtered": [{"room": "x@y", "ns": 0}]}, None, r"\[0\].room: 'x@y' is not an allowed"),
        (
            {"filtered": [{"room": "x", "ns": 0, "members": ["a@b"]}]},
            None,
            r"\[0\].members: only for a room with members_only = true",
        ),
        (
            {"filtered": [{"room": "x", "ns": 0, "members_only": True, "members": ["a@b/r"]}]},
            None,
            r"\[0\].members: 'a@b/r' is not a bare JID",
        ),
        (
            {"filtered": [{"room": "x", "ns": 0}, {"room": "x", "ns": 1}]},
            None,
            r"rooms.filtered\[1\].room: room 'x' is already the room of rooms.filtered\[0\]",
        ),
        (
            {"all_room": "enwiki", "wikis": ["enwiki"]},
            None,
            "rooms.all_room: room 'enwiki' is already the room of wiki enwiki",
        ),
        (
            {"wikis": ["en"]},
            {"enwiki": {"room": "en"}},
            "wikis.enwiki.room: room 'en' is already the room of wiki en",
        ),
        (
            {"filtered": [{"room": "x", "wiki": "secret"}]},
            {"secret": {"members_only": True}},
            r"rooms.filtered\[0\].wiki: secret is a members-only wiki",
        ),
        (
            {"unknown_wikis": "drop", "filtered": [{"room": "x", "wiki": "nowiki"}]},
            None,
            r'rooms.filtered\[0\].wiki: nowiki is not a known wiki and rooms.unknown_wikis = "d',
        ),
        ({"room": "{wiki}@evil", "wikis": ["enwiki"]}, None, "rooms.wikis: room name"),
        ({}, {"bad wiki": {}}, "wikis.bad wiki: 'bad wiki' is not a valid wiki ID"),
        ({}, {"enwiki": "en"}, r"wikis.enwiki: must be a table \[wikis.enwiki\]"),
        ({}, {"enwiki": {"room": "EN"}}, "wikis.enwiki.room: 'EN' is not an allowed room name"),
        ({}, {"enwiki": {"colour": "red"}}, "wikis.enwiki.colour: unknown key"),
        ({}, {"enwiki": {"server_url": "en.wikipedia.org"}}, "wikis.enwiki.server_url: the wi"),
        ({}, {"enwiki": {"server_url": "https://x/w"}}, r"wikis.enwiki.server_url: .*\(no path\)"),
        ({}, {"enwiki": {"server_script_path": "w"}}, "wikis.enwiki.server_script_path"),
        ({}, {"enwiki": {"members_only": "yes"}}, "wikis.enwiki.members_only: must be true"),
        ({}, {"enwiki": {"members": ["a@b"]}}, "wikis.enwiki.members: only for a room with"),
        (
            {},
            {"enwiki": {"members_only": True, "members": ["nobody"]}},
            "wikis.enwiki.members: 'nobody' is not a bare JID",
        ),
        ({"alll_room": "x"}, None, "rooms.alll_room: unknown key"),
    ],
)
def test_bad_routing_config_names_the_key(
    rooms: dict[str, Any], wikis: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        router(rooms, **({"wikis": wikis} if wikis is not None else {}))


def test_a_complete_routing_config_loads(tmp_path: Any) -> None:
    """The documented example, as an operator would write it, through load_config."""
    from udp2xmpp.config import load_config

    path = tmp_path / "bridge.toml"
    path.write_text(
        """
[xmpp]
jid = "rcbot@example.org"
password = "pw"

[rooms]
service = "conference.example.org"
room = "{wiki}"
wikis = ["dewiki"]
unknown_wikis = "drop"
all_room = "allwikis"

[[rooms.filtered]]
room = "enwiki-new-articles"
room_title = "New articles on the English Wikipedia"
wiki = "enwiki"
type = "new"
ns = 0
bot = false

[[rooms.filtered]]
room = "big-removals"
type = ["edit"]
max_change = -5000

[wikis.enwiki]
room = "en"
title = "English Wikipedia"
server_url = "https://en.wikipedia.org"
server_script_path = "/w"

[wikis.officewiki]
members_only = true
members = ["alice@example.org"]
"""
    )
    r = Router.from_settings(load_config(path).rooms)
    assert [room.jid.partition("@")[0] for room in r.static_rooms] == [
        "dewiki",
        "en",
        "officewiki",
        "allwikis",
        "enwiki-new-articles",
        "big-removals",
    ]
    assert names(r, change(type="new", oldlen=None)) == ["en", "allwikis", "enwiki-new-articles"]
    assert names(r, change("dewiki", oldlen=9000, newlen=1)) == [
        "dewiki",
        "allwikis",
        "big-removals",
    ]
    assert names(r, change("officewiki", oldlen=9000, newlen=1)) == ["officewiki"]
    with pytest.raises(UnknownWikiError):
        r.route(change("frwiki"))
