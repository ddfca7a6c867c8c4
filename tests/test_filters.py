"""The one filter engine (xmlrc.filters): each condition, the size rule, parsing, errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xmlrc.filters import (
    KEY_FIELDS,
    KEYS,
    Conditions,
    FilterError,
    parse,
    parse_words,
    value_from_text,
)
from xmlrc.wire import RecentChange


def change(**fields: Any) -> RecentChange:
    values: dict[str, Any] = {
        "wiki": "enwiki",
        "type": "edit",
        "ns": 0,
        "title": "Some page",
        "user": "Alice",
        "oldlen": 100,
        "newlen": 110,
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    values.update(fields)
    return RecentChange(**values)


LOG = change(type="log", oldlen=None, newlen=None)

# -- every condition: (plain values, a change that matches, one that does not) -------------
CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"wiki": "dewiki"}, {"wiki": "dewiki"}, {"wiki": "enwiki"}),
    ({"wiki": ["dewiki", "frwiki"]}, {"wiki": "frwiki"}, {"wiki": "enwiki"}),
    ({"type": "new"}, {"type": "new"}, {"type": "edit"}),
    ({"type": ("new", "log")}, {"type": "log"}, {"type": "categorize"}),
    ({"ns": 0}, {"ns": 0}, {"ns": 1}),
    ({"ns": [2, 3]}, {"ns": 3}, {"ns": 0}),
    ({"bot": True}, {"bot": True}, {"bot": False}),
    ({"bot": False}, {"bot": False}, {"bot": True}),
    ({"minor": True}, {"minor": True}, {"minor": False}),
    ({"minor": False}, {"minor": False}, {"minor": True}),
    ({"user": "Bob"}, {"user": "Bob"}, {"user": "bob"}),
    ({"user": {"Bob", "Carol"}}, {"user": "Carol"}, {"user": "Alice"}),
    ({"title_regex": "^Talk:"}, {"title": "Talk:Foo"}, {"title": "Foo Talk:"}),
    ({"title_regex": re.compile("(?i)box$")}, {"title": "SandBOX"}, {"title": "Boxes"}),
    ({"title_glob": "List of *"}, {"title": "List of cats"}, {"title": "A List of cats"}),
    ({"title_glob": "List_of_?"}, {"title": "List of X"}, {"title": "List of XY"}),
    ({"title_glob": "*box"}, {"title": "Sandbox"}, {"title": "Sandbox2"}),
    # The size rule: min_change / max_change signed and inclusive, min_abs_change either way.
    ({"min_change": 500}, {"oldlen": 0, "newlen": 500}, {"oldlen": 0, "newlen": 499}),
    ({"min_change": -10}, {"oldlen": 110, "newlen": 100}, {"oldlen": 111, "newlen": 100}),
    ({"max_change": -500}, {"oldlen": 600, "newlen": 100}, {"oldlen": 600, "newlen": 101}),
    ({"max_change": 0}, {"oldlen": 5, "newlen": 5}, {"oldlen": 5, "newlen": 6}),
    ({"min_abs_change": 500}, {"oldlen": 600, "newlen": 100}, {"oldlen": 600, "newlen": 101}),
    ({"min_abs_change": 500}, {"oldlen": 0, "newlen": 500}, {"oldlen": 0, "newlen": 499}),
    # A page creation's size change is its length; an unknown size never matches.
    ({"min_change": 100}, {"type": "new", "oldlen": None, "newlen": 100}, {"newlen": None}),
    ({"max_change": 100}, {"newlen": 50}, {"type": "log", "oldlen": None, "newlen": None}),
    ({"min_abs_change": 0}, {"oldlen": 7, "newlen": 7}, {"oldlen": 7, "newlen": None}),
]


@pytest.mark.parametrize(("values", "matching", "other"), CASES)
def test_each_condition(
    values: dict[str, Any], matching: dict[str, Any], other: dict[str, Any]
) -> None:
    conditions = parse(values)
    assert conditions.matches(change(**matching))
    assert not conditions.matches(change(**other))


def test_every_key_has_a_case_and_a_field() -> None:
    assert {key for values, _, _ in CASES for key in values} == set(KEYS)
    field_names = set(Conditions.__dataclass_fields__)
    assert set(KEY_FIELDS) == set(KEYS) and set(KEY_FIELDS.values()) == field_names


def test_conditions_combine_with_and_values_with_or() -> None:
    conditions = parse(
        {
            "wiki": "enwiki",
            "type": ["new", "edit"],
            "ns": [0, 4],
            "bot": False,
            "minor": False,
            "user": ["Alice", "Bob"],
            "title_regex": "^[A-M]",
            "title_glob": "*e",
            "min_change": -100,
            "max_change": 100,
            "min_abs_change": 5,
        }
    )
    base: dict[str, Any] = {"type": "new", "ns": 4, "user": "Bob", "title": "Apple"}
    assert conditions.matches(change(**base))
    assert conditions.matches(change(**base, oldlen=200))  # -90: within every bound
    for spoiler in (
        {"wiki": "dewiki"},
        {"type": "log"},
        {"ns": 1},
        {"bot": True},
        {"minor": True},
        {"user": "Mallory"},
        {"title": "Zebrae"},  # the regex
        {"title": "Apples"},  # the glob
        {"newlen": 300},  # +200 > max_change
        {"oldlen": 300},  # -190 < min_change
        {"oldlen": 108},  # +2: fewer than 5 bytes either way
    ):
        assert not conditions.matches(change(**{**base, **spoiler})), spoiler


def test_no_condition_matches_everything_even_an_unknown_size() -> None:
    empty = parse({})
    assert empty == Conditions() and empty.is_empty
    assert empty.matches(change()) and empty.matches(LOG)
    assert empty.describe() == "every change"
    assert not parse({"ns": 0}).is_empty


def test_an_unknown_size_never_matches_a_size_condition() -> None:
    for key, bound in [("min_change", -(10**9)), ("max_change", 10**9), ("min_abs_change", 0)]:
        assert not parse({key: bound}).matches(LOG), key


def test_min_change_and_max_change_together_can_select_a_band_or_one_size() -> None:
    exact = parse({"min_change": 10, "max_change": 10})
    assert exact.matches(change(oldlen=100, newlen=110))
    assert not exact.matches(change(oldlen=100, newlen=111))
    assert not exact.matches(change(oldlen=110, newlen=100))  # -10 is not +10: signed


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"colour": "red"}, r"colour: unknown condition \(known: wiki, type, ns,"),
        ({"wiki": "a b"}, "wiki: 'a b' is not a valid wiki ID"),
        ({"wiki": 3}, "wiki: must be a string or a list of strings"),
        ({"wiki": []}, "wiki: an empty list would match nothing"),
        ({"type": "edits"}, r"type: 'edits' is not a change type \(categorize, edit, external"),
        ({"type": ["new", ""]}, "type: must be a string or a list of strings"),
        ({"ns": "0"}, "ns: namespace numbers, got '0'"),
        ({"ns": [0, True]}, "ns: namespace numbers, got True"),
        ({"ns": ()}, "ns: an empty list"),
        ({"bot": "no"}, "bot: must be true or false, got 'no'"),
        ({"minor": 0}, "minor: must be true or false, got 0"),
        ({"user": [1]}, "user: must be a string or a list of strings"),
        ({"user": ""}, "user: must be a string or a list of strings"),
        ({"title_regex": "(unclosed"}, r"title_regex: bad regex '\(unclosed': missing \)"),
        ({"title_regex": 3}, "title_regex: must be a regular expression"),
        ({"title_regex": re.compile(b"x")}, "title_regex: must be a str pattern"),
        ({"title_glob": " _ "}, "title_glob: must be a title pattern"),
        ({"title_glob": ["a*"]}, "title_glob: must be a title pattern"),
        ({"min_change": 1.5}, r"min_change: must be an integer \(bytes\), got 1.5"),
        ({"max_change": "5"}, "max_change: must be an integer"),
        ({"min_change": True}, "min_change: must be an integer"),
        ({"min_abs_change": -1}, "min_abs_change: bytes added or removed, 0 or more, got -1"),
        ({"min_change": 10, "max_change": -10}, "max_change: -10 is below min_change 10"),
    ],
)
def test_parsing_errors_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError, match=f"^{message}") as error:
        parse(values)
    assert error.value.key == message.partition(":")[0]
    assert str(error.value) == f"{error.value.key}: {error.value.reason}"
    assert isinstance(error.value, ValueError)  # callers that catch ValueError still do


def test_parse_can_be_limited_to_some_keys() -> None:
    assert parse({"ns": 1}, keys=("ns",)) == Conditions(namespaces=frozenset({1}))
    with pytest.raises(FilterError, match=r"^user: unknown condition \(known: ns\)"):
        parse({"user": "A"}, keys=("ns",))


def test_parsed_values_are_normalised() -> None:
    conditions = parse({"ns": [1, 1, 3], "user": ["A", "B", "A"], "title_glob": " List__of_* "})
    assert conditions.namespaces == frozenset({1, 3})
    assert conditions.users == frozenset({"A", "B"})
    assert conditions.title_glob == "List of *"  # underscores and runs of spaces: one space
    assert isinstance(parse({"title_regex": "^A"}).title_regex, re.Pattern)


def test_values_read_back_and_describe() -> None:
    values = {
        "wiki": ["dewiki", "enwiki"],
        "type": ["new"],
        "ns": [0, 4],
        "bot": False,
        "minor": True,
        "user": ["Bob"],
        "title_regex": "^Talk:",
        "title_glob": "List of *",
        "min_change": -100,
        "max_change": 100,
        "min_abs_change": 5,
    }
    conditions = parse(values)
    assert conditions.values() == values
    assert parse(conditions.values()) == conditions
    assert hash(parse(values)) == hash(conditions)  # usable as a key, equal by value
    assert conditions.describe() == (
        "wiki dewiki|enwiki, type new, ns 0|4, not bot, minor, user Bob, title ~ /^Talk:/, "
        'title like "List of *", size change >= -100, size change <= +100, '
        "5 bytes or more added or removed"
    )


def test_conditions_built_directly_are_compiled_too() -> None:
    direct = Conditions(wikis=frozenset({"enwiki", "dewiki"}), min_abs_change=5)
    assert direct.matches(change(oldlen=10, newlen=0))
    assert not direct.matches(change(wiki="frwiki", oldlen=10, newlen=0))
    assert Conditions.matches(direct, change(oldlen=10, newlen=0))  # through the class too


# -- command words -------------------------------------------------------------------------


def test_words_read_like_a_command() -> None:
    words = ["NS=0,1", "title=List_of_*", "min=500", "type=new,edit", "bot=no", "user=Smith, J"]
    conditions = parse_words(words, aliases={"min": "min_abs_change", "title": "title_glob"})
    assert conditions == Conditions(
        namespaces=frozenset({0, 1}),
        title_glob="List of *",
        min_abs_change=500,
        types=frozenset({"new", "edit"}),
        bot=False,
        users=frozenset({"Smith, J"}),  # one user name: names may hold commas
    )
    assert parse_words(["max_change=-500"]).max_change == -500


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["ns"], "ns: not a condition"),
        (["ns="], "ns=: not a condition"),
        (["=0"], "=0: not a condition"),
        (["size=5"], r"size: unknown condition \(known: min, min_abs_change, namespace, ns\)"),
        (["ns=0", "namespace=1"], "namespace: given twice"),
        (["ns=zero"], "ns: namespace numbers, like ns=0,1, got 'zero'"),
        (["min=-5"], "min: bytes added or removed, 0 or more, got -5"),
        (["min=5k"], r"min: must be an integer \(bytes\), got '5k'"),
        (["min_change=1", "max_change=0"], "max_change: 0 is below min_change 1"),
    ],
)
def test_word_errors_name_the_key_as_typed(words: list[str], message: str) -> None:
    keys = ("ns", "min_abs_change") if words[0].startswith(("size", "min=")) else KEYS
    aliases = {"min": "min_abs_change", "namespace": "ns"}
    with pytest.raises(FilterError, match=f"^{message}"):
        parse_words(words, keys=keys, aliases=aliases)


def test_value_from_text() -> None:
    assert value_from_text("wiki", "enwiki") == "enwiki"
    assert value_from_text("wiki", "enwiki, dewiki") == ["enwiki", "dewiki"]
    assert value_from_text("ns", "-1") == [-1]
    assert value_from_text("minor", "TRUE") is True
    assert value_from_text("min_change", "+20") == 20
    assert value_from_text("title_regex", "a,b") == "a,b"
    with pytest.raises(FilterError, match=r"^bot: must be true or false"):
        value_from_text("bot", "maybe")
    with pytest.raises(FilterError, match=r"^page: unknown condition"):
        value_from_text("page", "x")


# -- the compiled matcher agrees with the definition, for any conditions and change --------


def reference(c: Conditions, ch: RecentChange) -> bool:
    """The definition, written out plainly (the module docstring's table)."""
    import fnmatch

    size = ch.size_change
    sized = c.min_change is not None or c.max_change is not None or c.min_abs_change is not None
    return (
        (c.wikis is None or ch.wiki in c.wikis)
        and (c.types is None or ch.type in c.types)
        and (c.namespaces is None or ch.ns in c.namespaces)
        and (c.bot is None or ch.bot == c.bot)
        and (c.minor is None or ch.minor == c.minor)
        and (c.users is None or ch.user in c.users)
        and (c.title_regex is None or c.title_regex.search(ch.title) is not None)
        and (c.title_glob is None or fnmatch.fnmatchcase(ch.title, c.title_glob))
        and (not sized or size is not None)
        and (c.min_change is None or (size is not None and size >= c.min_change))
        and (c.max_change is None or (size is not None and size <= c.max_change))
        and (c.min_abs_change is None or (size is not None and abs(size) >= c.min_abs_change))
    )


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


TITLES = st.sampled_from(["Foo", "Foo bar", "Talk:Foo", "List of cats", "Sandbox", "a?b"])
SIZES = st.integers(-50, 50)
conditions_strategy = st.builds(
    Conditions,
    wikis=maybe(st.frozensets(st.sampled_from(["enwiki", "dewiki", "frwiki"]), min_size=1)),
    types=maybe(st.frozensets(st.sampled_from(["edit", "new", "log"]), min_size=1)),
    namespaces=maybe(st.frozensets(st.integers(-1, 3), min_size=1)),
    bot=maybe(st.booleans()),
    minor=maybe(st.booleans()),
    users=maybe(st.frozensets(st.sampled_from(["Alice", "Bob"]), min_size=1)),
    title_regex=maybe(st.sampled_from(["^Foo", "bar$", "(?i)sand", "o"]).map(re.compile)),
    title_glob=maybe(st.sampled_from(["Foo*", "*a*", "List of ?ats", "a[?]b", "*"])),
    min_change=maybe(SIZES),
    max_change=maybe(SIZES),
    min_abs_change=maybe(st.integers(0, 50)),
)
changes_strategy = st.builds(
    change,
    wiki=st.sampled_from(["enwiki", "dewiki", "frwiki"]),
    type=st.sampled_from(["edit", "new", "log"]),
    ns=st.integers(-1, 3),
    bot=st.booleans(),
    minor=st.booleans(),
    user=st.sampled_from(["Alice", "Bob", "Carol"]),
    title=TITLES,
    oldlen=maybe(st.integers(0, 60)),
    newlen=maybe(st.integers(0, 60)),
)


@given(conditions_strategy, changes_strategy)
def test_the_compiled_matcher_is_the_definition(c: Conditions, ch: RecentChange) -> None:
    assert c.matches(ch) == reference(c, ch)
