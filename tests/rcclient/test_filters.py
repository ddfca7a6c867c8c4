"""The pure filter module: keyword conditions, callables, and all / any / none."""

from __future__ import annotations

import re

import pytest

from rcclient.filters import FILTER_KEYS, ChangeFilter, condition, split_filter_options
from tests.rcclient.util import change

EDIT = change("enwiki", 1)  # ns 0, Alice, +1 byte, "Page 1"
BOT = change("enwiki", 2, bot=True, minor=True)
TALK = change("dewiki", 3, ns=1, title="Talk:Page 3", user="Bob")
NEW = change("enwiki", 4, type="new", old_revid=None, oldlen=None, newlen=800)
REMOVAL = change("enwiki", 5, oldlen=5000, newlen=100)
LOG = change("enwiki", 6, type="log", revid=None, old_revid=None, oldlen=None, newlen=None)
IP = change("enwiki", 7, user="192.0.2.7", anon=True)
ALL = [EDIT, BOT, TALK, NEW, REMOVAL, LOG, IP]


def rcids(flt: ChangeFilter) -> list[int | None]:
    return [c.rcid for c in ALL if flt(c)]


def test_an_empty_filter_matches_everything() -> None:
    flt = ChangeFilter()
    assert flt.empty
    assert rcids(flt) == [1, 2, 3, 4, 5, 6, 7]


def test_values_compare_like_pywikibot() -> None:
    assert rcids(ChangeFilter(wiki="dewiki")) == [3]  # a string: equality
    assert rcids(ChangeFilter(ns=1)) == [3]  # a number: equality
    assert rcids(ChangeFilter(bot=True)) == [2]  # a bool: identity
    assert rcids(ChangeFilter(bot=False, minor=False)) == [1, 3, 4, 5, 6, 7]
    assert rcids(ChangeFilter(type=("new", "log"))) == [4, 6]  # a collection: membership
    assert rcids(ChangeFilter(ns=range(1, 16, 2))) == [3]
    assert rcids(ChangeFilter(user={"Bob", "Carol"})) == [3]
    assert rcids(ChangeFilter(revid=None)) == [6]  # None: identity


def test_title_is_a_regex_and_other_strings_are_not() -> None:
    assert rcids(ChangeFilter(title=r"^Talk:")) == [3]
    assert rcids(ChangeFilter(title=r"Page [45]$")) == [4, 5]
    assert rcids(ChangeFilter(title_regex=r"^Talk:")) == [3]
    assert rcids(ChangeFilter(user=".*")) == []  # user= is exact
    assert rcids(ChangeFilter(user=re.compile(r"^\d+\."))) == [7]  # unless given a pattern
    assert rcids(ChangeFilter(title=("Page 1", "Page 2"))) == [1, 2]  # exact titles


def test_callables_on_a_value_and_on_the_change() -> None:
    assert rcids(ChangeFilter(size_change=lambda d: d is not None and d < -500)) == [5]
    assert rcids(ChangeFilter(lambda c: c.user_is_ip)) == [7]
    assert rcids(ChangeFilter(is_log=True)) == [6]  # properties are keys too
    assert rcids(ChangeFilter(new=True)) == [4]


def test_size_bounds_are_signed_and_inclusive_and_unknown_never_matches() -> None:
    assert rcids(ChangeFilter(max_change=-500)) == [5]
    assert rcids(ChangeFilter(min_change=800)) == [4]
    assert rcids(ChangeFilter(min_change=1, max_change=1)) == [1]
    assert rcids(ChangeFilter(min_change=-(10**9))) == [1, 2, 3, 4, 5, 7]  # not the log
    assert rcids(ChangeFilter(max_change=10**9)) == [1, 2, 3, 4, 5, 7]


def test_all_any_none_combine_like_register_filter() -> None:
    flt = ChangeFilter(wiki="enwiki")  # all
    flt.register(ftype="none", bot=True)
    flt.register(ftype="none", type="log")
    assert rcids(flt) == [1, 4, 5, 7]
    flt.register(ftype="any", type="new", max_change=-500)  # each keyword one condition
    assert rcids(flt) == [4, 5]
    flt.register(lambda c: c.rcid != 4, ftype="all")
    assert rcids(flt) == [5]


def test_any_alone_and_none_alone() -> None:
    assert rcids(ChangeFilter(ftype="any", user="Bob", ns=0, bot=True)) == [1, 2, 3, 4, 5, 6, 7]
    assert rcids(ChangeFilter(ftype="any", user="Bob", type="new")) == [3, 4]
    assert rcids(ChangeFilter(ftype="none", user="Bob", type="new")) == [1, 2, 5, 6, 7]


def test_a_filter_is_a_predicate_inside_another() -> None:
    inner = ChangeFilter(ftype="any", user="Bob", type="new")
    outer = ChangeFilter(inner, ftype="none")
    assert rcids(outer) == [1, 2, 5, 6, 7]


def test_mistakes_fail_at_once() -> None:
    with pytest.raises(TypeError, match="unknown filter key 'namespace'"):
        ChangeFilter(namespace=0)
    # The messages are the engine's (xmlrc.filters), the same as the bridge's config.
    with pytest.raises(ValueError, match="title: bad regex"):
        ChangeFilter(title="(")
    with pytest.raises(ValueError, match="ftype must be one of"):
        ChangeFilter(wiki="x", ftype="some")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is not a callable"):
        ChangeFilter("bot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_change: must be an integer"):
        condition("min_change", "500")
    with pytest.raises(ValueError, match="title_regex: must be a regular expression"):
        condition("title_regex", 3)


def test_split_filter_options() -> None:
    conditions, rest = split_filter_options({"ns": 0, "host": "x", "min_change": 5, "port": 1})
    assert conditions == {"ns": 0, "min_change": 5}
    assert rest == {"host": "x", "port": 1}
    assert {"wiki", "type", "ns", "bot", "minor", "user", "title", "size_change"} <= FILTER_KEYS


def test_the_engines_other_conditions_are_keywords_too() -> None:
    # title_glob matches the whole title, "_" standing for a space; no "Talk:Page 3".
    assert rcids(ChangeFilter(title_glob="Page_?")) == [1, 2, 4, 5, 6, 7]
    # min_abs_change counts bytes either way (+800 and -4900), never an unknown size.
    assert rcids(ChangeFilter(min_abs_change=800)) == [4, 5]
    assert rcids(ChangeFilter(min_abs_change=0)) == [1, 2, 3, 4, 5, 7]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"ns": "0"}, "ns: namespace numbers"),
        ({"ns": [0, "1"]}, "ns: namespace numbers"),
        ({"type": "edits"}, "type: 'edits' is not a change type"),
        ({"bot": 1}, "bot: must be true or false"),
        ({"wiki": "en wiki"}, "wiki: 'en wiki' is not a valid wiki ID"),
        ({"min_abs_change": -1}, "min_abs_change: bytes added or removed, 0 or more"),
    ],
)
def test_values_that_used_to_match_nothing_now_fail_at_once(
    conditions: dict[str, object], message: str
) -> None:
    """Behaviour change: the engine checks its conditions' values (they were compared
    with ==, and ``ns="0"`` or ``type="edits"`` silently matched no change)."""
    with pytest.raises(ValueError, match=f"^{message}"):
        ChangeFilter(**conditions)


def test_tail_options_reach_the_one_engine_title_glob_and_min_abs_change() -> None:
    """`rcclient tail --title-glob ... --min-abs-change ...`, as the CLI builds them."""
    from rcclient.cli import _filter

    where = _filter((), (), (), False, (), None, None, None, title_glob="List of *",
                    min_abs_change=500)  # fmt: skip
    assert where(change("enwiki", 1, title="List of rivers", oldlen=2_000, newlen=1_400))
    assert not where(change("enwiki", 2, title="List of rivers", oldlen=2_000, newlen=2_100))
    assert not where(change("enwiki", 3, title="Rivers", oldlen=0, newlen=900))
