"""The one filter engine: every condition a recent change can be selected by.

This module is responsible for three things, for every program of xmlrc
(the bridge's filtered rooms, the watch service's filters, rcclient's
``register_filter``):

- what each condition means, defined once (`KEYS`, `Conditions`);
- reading conditions from plain values: a ``[[rooms.filtered]]`` TOML
  table or keyword arguments (`parse`), a chat command's ``key=value``
  words (`parse_words`), with a `FilterError` naming the key;
- a compiled matcher (`Conditions.matches`), cheap enough for routing to
  run on every change for every filtered room.

It is not responsible for where conditions come from, for the caps a
service puts on what untrusted people may ask (the watch service limits
globs and namespaces), nor for combining filters (rcclient's all / any /
none builds on single conditions from here).

The conditions (all given ones must match; within one, any listed value):

==================  ==========================================================
``wiki``            the change's wiki ID is one of these
``type``            its type is one of these (edit, new, log, categorize, external)
``ns``              its namespace number is one of these
``bot``             it is (true) or is not (false) flagged as a bot edit
``minor``           it is (true) or is not (false) flagged as a minor edit
``user``            its user name is one of these, exactly
``title_regex``     a regular expression searched (not anchored) in the title
``title_glob``      a glob the whole title matches: ``*`` any text, ``?`` one
                    character; ``_`` stands for a space, as in MediaWiki titles
``min_change``      the size change is at least this (signed bytes, inclusive)
``max_change``      the size change is at most this (signed bytes, inclusive)
``min_abs_change``  at least this many bytes added or removed
==================  ==========================================================

The size rule, stated once: a change's size change is
`RecentChange.size_change`, new length minus old length in bytes, signed (a
removal is negative, a page creation is its whole length). ``min_change``
and ``max_change`` bound it with its sign: ``max_change = -500`` is a
removal of 500 bytes or more. ``min_abs_change`` bounds its magnitude
whichever way: ``min_abs_change = 500`` is 500 bytes added or removed. A
change of unknown size (a log action) never matches any size condition.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from xmlrc.wire.coerce import WIKI_ID
from xmlrc.wire.model import CHANGE_TYPES, RecentChange

__all__ = [
    "KEYS",
    "KEY_FIELDS",
    "Conditions",
    "FilterError",
    "Matcher",
    "parse",
    "parse_words",
    "value_from_text",
]

#: A compiled condition on one change.
Matcher = Callable[[RecentChange], bool]

#: Every condition's key, as configs, commands and keyword arguments spell it.
KEYS: tuple[str, ...] = (
    "wiki",
    "type",
    "ns",
    "bot",
    "minor",
    "user",
    "title_regex",
    "title_glob",
    "min_change",
    "max_change",
    "min_abs_change",
)
#: Key -> the `Conditions` field that holds it (the list-valued ones are plural).
KEY_FIELDS: Mapping[str, str] = {
    **{key: key for key in KEYS},
    "wiki": "wikis",
    "type": "types",
    "ns": "namespaces",
    "user": "users",
}
_FIELD_KEYS = {name: key for key, name in KEY_FIELDS.items()}
_SPACES = re.compile(r"[\s_]+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


class FilterError(ValueError):
    """A condition that cannot be read. ``str()`` is ``"KEY: why"``; `key`, `reason` apart."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Conditions:
    """Which changes a filter takes: every given condition must match (None: any).

    Within one condition any listed value matches (``types={"new", "edit"}``).
    Build one with `parse` (plain values, checked) or directly (values
    trusted). ``matches(change)`` is compiled when the object is made.
    """

    wikis: frozenset[str] | None = None
    types: frozenset[str] | None = None
    namespaces: frozenset[int] | None = None
    bot: bool | None = None
    minor: bool | None = None
    users: frozenset[str] | None = None
    #: Searched (not anchored) in the page title, as the wiki shows it ("Talk:Foo bar").
    title_regex: re.Pattern[str] | None = None
    #: Matched against the whole title (``*``, ``?``), spaces not underscores.
    title_glob: str | None = None
    #: Inclusive bounds on `RecentChange.size_change`, signed bytes.
    min_change: int | None = None
    max_change: int | None = None
    #: Smallest number of bytes added or removed (|size change| >= it).
    min_abs_change: int | None = None

    def __post_init__(self) -> None:
        # The compiled matcher is put on the instance over the method below: a call is
        # then one plain function call, which tests only the conditions given.
        object.__setattr__(self, "matches", _compile(self))

    def matches(self, change: RecentChange) -> bool:
        """True when `change` meets every condition (the compiled matcher answers)."""
        return _compile(self)(change)  # only when called on the class: Conditions.matches(c, x)

    @property
    def is_empty(self) -> bool:
        """True when there is no condition (every change would match)."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def values(self) -> dict[str, Any]:
        """The given conditions as plain values by key; `parse` reads them back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, frozenset):
                value = sorted(value)
            elif isinstance(value, re.Pattern):
                value = value.pattern
            out[_FIELD_KEYS[f.name]] = value
        return out

    def describe(self) -> str:
        """The conditions in words (``wiki enwiki, type new, ns 0``), or "every change"."""
        parts: list[str] = []
        if self.wikis is not None:
            parts.append("wiki " + "|".join(sorted(self.wikis)))
        if self.types is not None:
            parts.append("type " + "|".join(sorted(self.types)))
        if self.namespaces is not None:
            parts.append("ns " + "|".join(str(ns) for ns in sorted(self.namespaces)))
        if self.bot is not None:
            parts.append("bot" if self.bot else "not bot")
        if self.minor is not None:
            parts.append("minor" if self.minor else "not minor")
        if self.users is not None:
            parts.append("user " + "|".join(sorted(self.users)))
        if self.title_regex is not None:
            parts.append(f"title ~ /{self.title_regex.pattern}/")
        if self.title_glob is not None:
            parts.append(f'title like "{self.title_glob}"')
        if self.min_change is not None:
            parts.append(f"size change >= {self.min_change:+d}")
        if self.max_change is not None:
            parts.append(f"size change <= {self.max_change:+d}")
        if self.min_abs_change is not None:
            parts.append(f"{self.min_abs_change} bytes or more added or removed")
        return ", ".join(parts) or "every change"


# -- parsing ------------------------------------------------------------------------------


def parse(values: Mapping[str, Any], *, keys: Collection[str] = KEYS) -> Conditions:
    """`Conditions` from plain values by key, as a TOML table or keyword arguments give them.

    A list-valued condition (wiki, type, ns, user) takes one value or a list
    (tuple, set) of them; bot and minor take true or false; title_regex a
    string or a compiled pattern; the size conditions an integer. Raises
    `FilterError` naming the first wrong key: one not in `keys`, a value of
    the wrong kind, an empty list, ``max_change`` below ``min_change``.
    """
    found: dict[str, Any] = {}
    for key, value in values.items():
        if key not in keys:
            known = ", ".join(k for k in KEYS if k in keys)
            raise FilterError(key, f"unknown condition (known: {known})")
        found[KEY_FIELDS[key]] = _READERS[key](key, value)
    low, high = found.get("min_change"), found.get("max_change")
    if low is not None and high is not None and low > high:
        raise FilterError("max_change", f"{high} is below min_change {low}; nothing would match")
    return Conditions(**found)


def parse_words(
    words: Iterable[str],
    *,
    keys: Collection[str] = KEYS,
    aliases: Mapping[str, str] | None = None,
) -> Conditions:
    """`Conditions` from ``key=value`` words, as a chat command gives them.

    ``ns=0,1 title_glob="List of *" min_abs_change=500`` (the words already
    split, quotes removed). Keys are case-insensitive; `aliases` maps other
    words to keys (``{"min": "min_abs_change"}``). Values are read by
    `value_from_text`. Raises `FilterError` naming the key as it was typed.
    """
    aliases = aliases or {}
    values: dict[str, Any] = {}
    for word in words:
        typed, eq, text = word.partition("=")
        typed = typed.lower()
        if not eq or not typed or not text:
            raise FilterError(word[:30], "not a condition (key=value, like ns=0)")
        key = aliases.get(typed, typed)
        if key not in keys:
            known = ", ".join(sorted({*keys, *(a for a, k in aliases.items() if k in keys)}))
            raise FilterError(typed[:30], f"unknown condition (known: {known})")
        if key in values:
            raise FilterError(typed[:30], "given twice")
        try:
            values[key] = value_from_text(key, text)
            parse({key: values[key]})  # each error under the key as it was typed
        except FilterError as exc:
            raise FilterError(typed[:30], exc.reason) from None
    return parse(values, keys=keys)


def value_from_text(key: str, text: str) -> Any:
    """The plain value a command's text stands for: ``wiki``, ``type`` and ``ns`` take
    comma-separated lists (``ns=0,1``), bot and minor true/false (yes/no), the size
    conditions an integer; the rest are the text itself (one user name: names may
    hold commas). Raises `FilterError`."""
    if key not in KEY_FIELDS:
        raise FilterError(key, "unknown condition")
    if key in ("wiki", "type", "ns"):
        items = [item.strip() for item in text.split(",")]
        if key == "ns":
            if not all(_INTEGER.fullmatch(item) for item in items):
                raise FilterError(key, f"namespace numbers, like ns=0,1, got {text[:30]!r}")
            return [int(item) for item in items]
        return items if len(items) > 1 else items[0]
    if key in ("bot", "minor"):
        flag = {"true": True, "yes": True, "false": False, "no": False}.get(text.lower())
        if flag is None:
            raise FilterError(key, f"must be true or false, got {text[:20]!r}")
        return flag
    if key in ("min_change", "max_change", "min_abs_change"):
        if not _INTEGER.fullmatch(text):
            raise FilterError(key, f"must be an integer (bytes), got {text[:20]!r}")
        return int(text)
    return text


def _members(key: str, value: Any) -> list[Any]:
    values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    if not values:
        raise FilterError(key, "an empty list would match nothing")
    return values


def _strings(key: str, value: Any) -> list[str]:
    values = _members(key, value)
    for item in values:
        if not isinstance(item, str) or not item:
            raise FilterError(key, "must be a string or a list of strings")
    return values


def _read_wikis(key: str, value: Any) -> frozenset[str]:
    wikis = _strings(key, value)
    for wiki in wikis:
        if not WIKI_ID.fullmatch(wiki):
            raise FilterError(key, f"{wiki[:60]!r} is not a valid wiki ID")
    return frozenset(wikis)


def _read_types(key: str, value: Any) -> frozenset[str]:
    types = _strings(key, value)
    for kind in types:
        if kind not in CHANGE_TYPES:
            known = ", ".join(sorted(CHANGE_TYPES))
            raise FilterError(key, f"{kind[:30]!r} is not a change type ({known})")
    return frozenset(types)


def _read_namespaces(key: str, value: Any) -> frozenset[int]:
    namespaces = _members(key, value)
    for ns in namespaces:
        if isinstance(ns, bool) or not isinstance(ns, int):
            raise FilterError(key, f"namespace numbers, got {ns!r}")
    return frozenset(namespaces)


def _read_users(key: str, value: Any) -> frozenset[str]:
    return frozenset(_strings(key, value))


def _read_flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FilterError(key, f"must be true or false, got {value!r}")
    return value


def _read_regex(key: str, value: Any) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        if not isinstance(value.pattern, str):
            raise FilterError(key, "must be a str pattern, not a bytes one")
        return value
    if not isinstance(value, str) or not value:
        raise FilterError(key, f"must be a regular expression (a string), got {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise FilterError(key, f"bad regex {value!r}: {exc}") from None


def _read_glob(key: str, value: Any) -> str:
    glob = _SPACES.sub(" ", value).strip() if isinstance(value, str) else ""
    if not glob:
        raise FilterError(key, f"must be a title pattern, like List_of_*, got {value!r}")
    return glob


def _read_bytes(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FilterError(key, f"must be an integer (bytes), got {value!r}")
    return value


def _read_magnitude(key: str, value: Any) -> int:
    size = _read_bytes(key, value)
    if size < 0:
        raise FilterError(key, f"bytes added or removed, 0 or more, got {size}")
    return size


_READERS: dict[str, Callable[[str, Any], Any]] = {
    "wiki": _read_wikis,
    "type": _read_types,
    "ns": _read_namespaces,
    "bot": _read_flag,
    "minor": _read_flag,
    "user": _read_users,
    "title_regex": _read_regex,
    "title_glob": _read_glob,
    "min_change": _read_bytes,
    "max_change": _read_bytes,
    "min_abs_change": _read_magnitude,
}


# -- the compiled matcher -----------------------------------------------------------------
#
# One Python function per filter, testing only the conditions given, in one
# boolean expression: a third faster than a method that checks every field
# for None, twice as fast as a loop over one closure per condition. The source
# is put together from the fixed fragments below only (never from a value:
# those are bound as the factory's arguments), and compiled once per shape.


def _compile(c: Conditions) -> Matcher:
    tests: list[str] = []
    if c.wikis is not None:
        tests.append("c.wiki == wiki" if len(c.wikis) == 1 else "c.wiki in wikis")
    if c.types is not None:
        tests.append("c.type in types")
    if c.namespaces is not None:
        tests.append("c.ns in namespaces")
    if c.bot is not None:
        tests.append("c.bot" if c.bot else "not c.bot")
    if c.minor is not None:
        tests.append("c.minor" if c.minor else "not c.minor")
    if c.users is not None:
        tests.append("c.user in users")
    sizes: list[str] = []
    if c.min_change is not None:
        sizes.append("low <= d")
    if c.max_change is not None:
        sizes.append("d <= high")
    if c.min_abs_change is not None:
        sizes.append("not -least < d < least")
    if sizes:
        tests.append("(d := c.size_change) is not None and " + " and ".join(sizes))
    # The title patterns last: they cost the most.
    if c.title_glob is not None:
        tests.append("glob(c.title) is not None")
    if c.title_regex is not None:
        tests.append("search(c.title) is not None")
    return _factory(" and ".join(tests) or "True")(
        wiki=next(iter(c.wikis)) if c.wikis else None,
        wikis=c.wikis,
        types=c.types,
        namespaces=c.namespaces,
        users=c.users,
        low=c.min_change,
        high=c.max_change,
        least=c.min_abs_change,
        # fnmatch's regexes use atomic groups (Python 3.11+): no catastrophic backtracking.
        glob=re.compile(fnmatch.translate(c.title_glob)).match
        if c.title_glob is not None
        else None,
        search=c.title_regex.search if c.title_regex is not None else None,
    )


_PARAMETERS = "wiki, wikis, types, namespaces, users, low, high, least, glob, search"


@functools.lru_cache(maxsize=256)
def _factory(expression: str) -> Callable[..., Matcher]:
    source = (
        f"def factory({_PARAMETERS}):\n"
        f"    def matches(c):\n"
        f"        return {expression}\n"
        f"    return matches\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<xmlrc.filters>", "exec"), {}, namespace)  # noqa: S102 - fixed text
    factory: Callable[..., Matcher] = namespace["factory"]
    return factory
