"""What a person can watch, and how names are normalised. Pure, no I/O.

A `Target` is what is watched: a page, a user's contributions, or a filter
on one wiki. A filter's conditions are those of the one engine,
`xmlrc.filters`: namespaces (``ns``), a title glob (``title_glob``, typed
``title=``) and bytes added or removed (``min_abs_change``, typed ``min=``);
this module adds only the caps on what one person may ask. A
`Subscription` is a target watched by one bare JID, with the database id it
was stored under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from xmlrc.filters import Conditions, Matcher
from xmlrc.wire.coerce import WIKI_ID
from xmlrc.wire.model import is_ip_address

Kind = Literal["page", "user", "filter"]
KINDS: tuple[Kind, ...] = ("page", "user", "filter")

#: MediaWiki's limit on a title (bytes); user names are shorter still.
MAX_NAME = 255
#: Bounds on a filter's title glob: its length and its wildcards (each costs matching time).
MAX_GLOB = 100
MAX_WILDCARDS = 5
#: Bounds on a filter's namespaces (how many, which numbers) and on its min= (bytes).
MAX_NAMESPACES = 20
NAMESPACE_RANGE = range(-2, 100_001)
MAX_MIN_BYTES = 10_000_000
#: The conditions a watch filter can hold (the columns the store has), and the words
#: people type for them: ``title=`` is a glob, ``min=`` counts bytes added or removed.
FILTER_KEYS = ("ns", "title_glob", "min_abs_change")
FILTER_ALIASES = {"namespace": "ns", "title": "title_glob", "min": "min_abs_change"}
#: Characters MediaWiki never allows in a title.
_BAD_TITLE = re.compile(r"[#<>\[\]|{}\x00-\x1f\x7f]")
_SPACES = re.compile(r"[\s_]+")


class TargetError(ValueError):
    """A wiki, title, user name or filter that cannot be watched (the message says why)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What one subscription watches: a page, a user, or a filter, on one wiki."""

    kind: Kind
    wiki: str
    #: The page title or user name, normalised ("" for a filter).
    name: str = ""
    #: Filter conditions (`xmlrc.filters`' ns, title_glob, min_abs_change); None: any.
    namespaces: tuple[int, ...] | None = None
    title_glob: str | None = None
    #: Smallest number of bytes added or removed (|size change| >= it).
    min_abs_change: int | None = None

    @property
    def min_change(self) -> int | None:
        """Deprecated name of `min_abs_change` (the store's column is still called so).

        Not the signed ``min_change`` of `xmlrc.filters`: this one counts bytes either way.
        """
        return self.min_abs_change

    @property
    def conditions(self) -> Conditions:
        """A filter's conditions for the one engine (its wiki included)."""
        return Conditions(
            wikis=frozenset({self.wiki}),
            namespaces=frozenset(self.namespaces) if self.namespaces is not None else None,
            title_glob=self.title_glob,
            min_abs_change=self.min_abs_change,
        )

    @property
    def spec(self) -> str:
        """The filter's conditions as text (``ns=0,1 title="List of *" min=500``); "" otherwise."""
        if self.kind != "filter":
            return ""
        parts = []
        if self.namespaces is not None:
            parts.append("ns=" + ",".join(str(ns) for ns in self.namespaces))
        if self.title_glob is not None:
            glob = self.title_glob
            parts.append(f'title="{glob}"' if " " in glob else f"title={glob}")
        if self.min_abs_change is not None:
            parts.append(f"min={self.min_abs_change}")
        return " ".join(parts)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes two targets the same (case differences in titles aside)."""
        name = ucfirst(self.name) if self.kind == "page" else self.name
        return (self.kind, self.wiki, name, self.spec)

    def describe(self) -> str:
        """In words, for replies: ``[[Sandbox]] on testwiki``."""
        if self.kind == "page":
            return f"[[{self.name}]] on {self.wiki}"
        if self.kind == "user":
            return f"edits by {self.name} on {self.wiki}"
        return f"changes on {self.wiki} with {self.spec}"


@dataclass(frozen=True, slots=True)
class Subscription:
    """A target watched by one bare JID, under its database id."""

    id: int
    jid: str
    target: Target
    created: float = 0.0


class CompiledFilter:
    """A filter subscription ready for the hot path: its conditions' compiled matcher."""

    __slots__ = ("matches", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.matches: Matcher = subscription.target.conditions.matches


def filter_target(wiki: str, conditions: Conditions) -> Target:
    """The filter `Target` of `conditions` (parsed with `FILTER_KEYS`), within the caps.

    Raises `TargetError` for no condition, too many or odd namespaces, a glob
    too long or too wild, a ``min`` of 0 or above `MAX_MIN_BYTES`.
    """
    namespaces = None
    if conditions.namespaces is not None:
        numbers = sorted(conditions.namespaces)
        if len(numbers) > MAX_NAMESPACES or any(n not in NAMESPACE_RANGE for n in numbers):
            raise TargetError("ns: namespace numbers, like ns=0,1")
        namespaces = tuple(numbers)
    glob = check_glob(conditions.title_glob) if conditions.title_glob is not None else None
    least = conditions.min_abs_change
    if least is not None and not 0 < least <= MAX_MIN_BYTES:
        raise TargetError(f"min={least}: a number of bytes, like min=500")
    if namespaces is None and glob is None and least is None:
        raise TargetError("at least one condition is needed")
    return Target("filter", wiki, "", namespaces, glob, least)


# -- names --------------------------------------------------------------------------------


def ucfirst(text: str) -> str:
    return text[:1].upper() + text[1:]


def check_wiki(wiki: str) -> str:
    if not WIKI_ID.fullmatch(wiki):
        raise TargetError(f"{wiki[:40]!r} is not a wiki ID (like enwiki)")
    return wiki


def normalize_title(text: str) -> str:
    """Underscores and runs of spaces to one space, trimmed; the case is kept as typed."""
    title = _SPACES.sub(" ", text).strip()
    if not title:
        raise TargetError("a page title is needed")
    if _BAD_TITLE.search(title):
        raise TargetError(f"{title[:60]!r} is not a page title (no # < > [ ] | {{ }})")
    if len(title.encode()) > MAX_NAME:
        raise TargetError("the title is too long")
    return title


def title_variants(title: str) -> set[str]:
    """The titles a watched title stands for: as typed, and as MediaWiki capitalises it.

    Most wikis capitalise the first letter (``sandbox`` is ``Sandbox``) and the
    first letter after a namespace (``talk:foo`` is ``Talk:Foo``); wikis that
    do not (Wiktionary) keep the title as typed, which is matched too.
    """
    variants = {title, ucfirst(title)}
    prefix, colon, rest = title.partition(":")
    if colon and rest and not rest[0].isspace() and prefix and " " not in prefix:
        variants.add(f"{ucfirst(prefix)}:{ucfirst(rest)}")
    return variants


def normalize_user(text: str) -> str:
    """A user name as MediaWiki shows it: spaces, first letter capitalised (IPs upper-cased)."""
    name = _SPACES.sub(" ", text).strip()
    if not name:
        raise TargetError("a user name is needed")
    if _BAD_TITLE.search(name) or "/" in name or len(name.encode()) > MAX_NAME:
        raise TargetError(f"{name[:60]!r} is not a user name")
    return name.upper() if is_ip_address(name) else ucfirst(name)


def check_glob(text: str) -> str:
    glob = _SPACES.sub(" ", text).strip()
    if not glob:
        raise TargetError("title= needs a pattern, like title=List_of_*")
    if len(glob) > MAX_GLOB:
        raise TargetError(f"the title pattern is too long ({MAX_GLOB} characters at most)")
    if glob.count("*") + glob.count("?") > MAX_WILDCARDS:
        raise TargetError(f"at most {MAX_WILDCARDS} wildcards (* and ?) in a title pattern")
    return glob
