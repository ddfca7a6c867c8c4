"""Client-side filters for changes, combined like pywikibot's EventStreams filters.

Pure code: a `ChangeFilter` is a predicate on `RecentChange`, built from
keyword conditions and callables::

    f = ChangeFilter(wiki="enwiki", type=("edit", "new"), ns=0)  # all must match
    f.register(ftype="none", bot=True)                           # and no bot
    f.register(ftype="any", user="Alice", title=r"^Sandbox")     # and one of these
    f(change)  # -> bool

The three filter types behave as in pywikibot's ``register_filter``: a change
is skipped when any ``none`` condition matches, or when one ``all`` condition
does not, or when there are ``any`` conditions and none of them matches.
Every keyword given to one `register` call is a separate condition of that
type.

A keyword names a condition of the one filter engine, `xmlrc.filters`
(``wiki``, ``type``, ``ns``, ``bot``, ``minor``, ``user``, ``title_regex``,
``title_glob``, ``min_change``, ``max_change``, ``min_abs_change``: the same
keys, meaning the same, as the bridge's filtered rooms), or any other field
or property of `RecentChange` (``size_change``, ``is_log``, ``revid``...).
A condition of the engine is read and checked by the engine (a wrong value
raises at once, naming the key), unless its value is one of the kinds only
the field comparison below takes (None, a compiled pattern, a callable, a
range or other collection that is not a list, tuple or set):

- ``wiki``, ``type``, ``ns``, ``user``: one value or a collection of them
  (``type=("edit", "new")``); ``bot``, ``minor``: True or False;
- ``title`` (a string) is ``title_regex``: a regular expression searched in
  the title (``title=r"^Talk:"``); ``title_glob`` matches the whole title;
- ``min_change`` and ``max_change``: inclusive bounds on ``size_change`` in
  bytes, signed (``max_change=-500`` is a removal of at least 500 bytes);
  ``min_abs_change``: at least that many bytes added or removed. A change of
  unknown size (a log action) matches none of them.

Any other value, and any other key, is compared with the field like this:

- ``True``, ``False``, ``None``: identity (``revid=None``: no revision);
- a string or a number: equality;
- a compiled regular expression: searched in the (string) value
  (``user=re.compile(r"Bot$")``);
- a callable: called with the value, matches when it returns true
  (``size_change=lambda d: d is not None and d < -500``);
- any other collection (list, tuple, set, range): the value is in it
  (``ns=range(0, 16, 2)``, ``title=("Main Page", "Sandbox")``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import fields
from typing import Any, Literal

from xmlrc import filters
from xmlrc.wire import RecentChange

__all__ = [
    "FILTER_KEYS",
    "FILTER_TYPES",
    "ChangeFilter",
    "FilterType",
    "Predicate",
    "condition",
    "split_filter_options",
]

#: A condition on one change.
Predicate = Callable[[RecentChange], bool]
FilterType = Literal["all", "any", "none"]
FILTER_TYPES: tuple[FilterType, ...] = ("all", "any", "none")

_FIELDS = tuple(f.name for f in fields(RecentChange))
_PROPERTIES = tuple(
    name
    for name in dir(RecentChange)
    if not name.startswith("_") and isinstance(getattr(RecentChange, name, None), property)
)
#: The engine's conditions that are not a field of a change: only the engine reads them.
_ENGINE_ONLY = frozenset(filters.KEYS) - frozenset(_FIELDS + _PROPERTIES)

#: Every keyword a filter accepts.
FILTER_KEYS: frozenset[str] = frozenset(_FIELDS + _PROPERTIES + filters.KEYS)


def _search(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    def match(value: Any) -> bool:
        return isinstance(value, str) and pattern.search(value) is not None

    return match


def _value_test(key: str, value: Any) -> Callable[[Any], bool]:
    """How one field value is compared with what the filter was given."""
    if value is None or isinstance(value, bool):
        return lambda got: got is value
    if isinstance(value, re.Pattern):
        return _search(value)
    if isinstance(value, (str, int, float)):
        return lambda got: bool(got == value)
    if callable(value):
        return lambda got: bool(value(got))
    if isinstance(value, Collection):
        members = frozenset(value) if isinstance(value, (list, tuple, set)) else value
        return lambda got: _member(got, members)
    return lambda got: bool(got == value)


def _member(got: Any, members: Collection[Any]) -> bool:
    try:
        return got in members
    except TypeError:  # an unhashable value tested against a frozenset
        return False


def _for_engine(value: Any) -> bool:
    """False for the values only the generic comparison takes: None, a compiled
    pattern, a callable, a collection other than a list, tuple or set (a range)."""
    if value is None or isinstance(value, re.Pattern) or callable(value):
        return False
    if isinstance(value, Collection) and not isinstance(value, str | bytes):
        return isinstance(value, list | tuple | set | frozenset)
    return True


def condition(key: str, value: Any) -> Predicate:
    """One keyword condition as a predicate (``condition("ns", 0)(change)``).

    Raises `TypeError` for a key that is not a condition of `xmlrc.filters`,
    a field or a property; `ValueError` (`xmlrc.filters.FilterError`, naming
    the key) for a value the engine cannot read: a bad regular expression,
    a bound that is not an integer, ``ns="0"``, ``type="edits"``.
    """
    if key not in FILTER_KEYS:
        known = ", ".join(sorted(FILTER_KEYS))
        raise TypeError(f"unknown filter key {key!r} (known: {known})")
    engine_key = key
    if key == "title" and isinstance(value, str | re.Pattern):
        engine_key = "title_regex"  # the pywikibot habit: a title string is a regex
    if engine_key in _ENGINE_ONLY or (engine_key in filters.KEYS and _for_engine(value)):
        try:
            return filters.parse({engine_key: value}).matches
        except filters.FilterError as exc:
            raise filters.FilterError(key, exc.reason) from None
    test = _value_test(key, value)
    return lambda change: test(getattr(change, key))


class ChangeFilter:
    """A predicate on changes made of ``all``, ``any`` and ``none`` conditions.

    ``ChangeFilter(*predicates, ftype="all", **conditions)`` is a shorthand
    for an empty filter followed by one `register` call. An empty filter
    matches everything.
    """

    def __init__(self, *predicates: Predicate, ftype: FilterType = "all", **conditions: Any):
        self._filters: dict[FilterType, list[Predicate]] = {name: [] for name in FILTER_TYPES}
        if predicates or conditions:
            self.register(*predicates, ftype=ftype, **conditions)

    def register(
        self, *predicates: Predicate, ftype: FilterType = "all", **conditions: Any
    ) -> None:
        """Add conditions of one type: callables taking a change, and keyword conditions."""
        if ftype not in FILTER_TYPES:
            raise ValueError(f"ftype must be one of {', '.join(FILTER_TYPES)}, not {ftype!r}")
        added: list[Predicate] = []
        for predicate in predicates:
            if not callable(predicate):
                raise TypeError(f"{predicate!r} is not a callable")
            added.append(predicate)
        for key, value in conditions.items():
            added.append(condition(key, value))
        self._filters[ftype].extend(added)

    @property
    def empty(self) -> bool:
        """True when no condition was registered (everything matches)."""
        return not any(self._filters.values())

    def __call__(self, change: RecentChange) -> bool:
        if any(predicate(change) for predicate in self._filters["none"]):
            return False
        if not all(predicate(change) for predicate in self._filters["all"]):
            return False
        any_of = self._filters["any"]
        return not any_of or any(predicate(change) for predicate in any_of)

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={len(self._filters[name])}" for name in FILTER_TYPES)
        return f"<ChangeFilter {counts}>"


def build(predicates: Iterable[Predicate], conditions: dict[str, Any]) -> ChangeFilter | None:
    """An ``all`` filter of `predicates` and `conditions`, or None when both are empty."""
    predicates = tuple(predicates)
    if not predicates and not conditions:
        return None
    return ChangeFilter(*predicates, **conditions)


def split_filter_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into (filter conditions, everything else)."""
    conditions = {key: value for key, value in options.items() if key in FILTER_KEYS}
    rest = {key: value for key, value in options.items() if key not in FILTER_KEYS}
    return conditions, rest
