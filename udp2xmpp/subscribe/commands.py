"""The chat commands people send the bridge, parsed. Pure: text in, a command or an error out.

    watch WIKI TITLE                 a page (the rest of the line is the title)
    watchuser WIKI USER              a user's changes
    watchfilter WIKI CONDITIONS      ns=0,1  title=GLOB  min=BYTES (one at least)
    unwatch WIKI TITLE | unwatch NUMBER | unwatch all
    unwatchuser WIKI USER
    list
    mute DURATION (30m, 2h, 1d) | mute off | unmute
    help [COMMAND]

Verbs are case-insensitive; a leading ``/`` or ``!`` is ignored. A wrong
command gets a `CommandError` whose message is the usage of what was meant.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from xmlrc import filters

from .model import (
    FILTER_ALIASES,
    FILTER_KEYS,
    Target,
    TargetError,
    check_wiki,
    filter_target,
    normalize_title,
    normalize_user,
)

#: The longest mute: 30 days.
MAX_MUTE = 30 * 86400
#: Longest command text we read; the rest of a longer message is ignored (it is refused).
MAX_COMMAND = 1000

USAGE: dict[str, str] = {
    "watch": "watch WIKI TITLE: tell me when the page changes (watch enwiki Main Page)",
    "watchuser": "watchuser WIKI USER: tell me about a user's changes (watchuser enwiki Alice)",
    "watchfilter": (
        "watchfilter WIKI [ns=N,N] [title=GLOB] [min=BYTES]: changes that match all the "
        "conditions given (watchfilter enwiki ns=0 title=List_of_* min=500; "
        "* is any text, min counts bytes added or removed)"
    ),
    "unwatch": "unwatch WIKI TITLE, unwatch NUMBER (from list), or unwatch all",
    "unwatchuser": "unwatchuser WIKI USER",
    "list": "list: what you watch, numbered",
    "mute": "mute DURATION (30m, 2h, 1d; 30 days at most): nothing for a while; mute off",
    "unmute": "unmute: notifications again",
    "help": "help [COMMAND]",
}
HELP = "Commands:\n" + "\n".join(USAGE.values())


@dataclass(frozen=True, slots=True)
class Watch:
    """``watch``, ``watchuser``, ``watchfilter``: subscribe to a page, a user or a filter."""

    target: Target


@dataclass(frozen=True, slots=True)
class Unwatch:
    """``unwatch WIKI TITLE``, ``unwatchuser``: drop the subscription to that page or user."""

    target: Target


@dataclass(frozen=True, slots=True)
class UnwatchNumber:
    """The ``unwatch N`` command: drop the subscription numbered N in the user's list."""

    number: int


@dataclass(frozen=True, slots=True)
class UnwatchAll:
    """The ``unwatch all`` command: drop every subscription of the user."""


@dataclass(frozen=True, slots=True)
class ListCommand:
    """The ``list`` command: show the user's subscriptions, numbered."""


@dataclass(frozen=True, slots=True)
class Mute:
    """``mute DURATION``, ``mute off``, ``unmute``: hold notifications for a while (0: unmute)."""

    #: Seconds; 0 means unmute.
    seconds: int


@dataclass(frozen=True, slots=True)
class Help:
    """The ``help`` command: the command list, or the usage of one command."""

    topic: str | None = None


Command = Watch | Unwatch | UnwatchNumber | UnwatchAll | ListCommand | Mute | Help


class CommandError(ValueError):
    """A command that cannot be understood; the message is what to tell the user."""


def parse_command(text: str) -> Command:
    """Parse one chat message into a command. Raises `CommandError` with the usage."""
    line = text.strip()
    if len(line) > MAX_COMMAND:
        raise CommandError(f"That is too long for a command. {HELP}")
    if line[:1] in ("/", "!"):
        line = line[1:]
    verb, _, rest = line.partition(" ")
    verb = verb.lower()
    rest = rest.strip()
    if not verb:
        raise CommandError(HELP)
    parser = _PARSERS.get(verb)
    if parser is None:
        raise CommandError(f"Unknown command {verb[:30]!r}. {HELP}")
    try:
        return parser(rest)
    except TargetError as exc:
        raise CommandError(f"{_sentence(str(exc))} Usage: {USAGE[verb]}") from None


def parse_duration(text: str) -> int:
    """``30m``, ``2h``, ``1d``, ``90s``, ``1h30m`` to seconds (at most 30 days)."""
    parts = _DURATION_PART.findall(text.lower().replace(" ", ""))
    if not parts or "".join(n + u for n, u in parts) != text.lower().replace(" ", ""):
        raise TargetError(f"{text[:20]!r} is not a duration (like 30m, 2h, 1d)")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if not 0 < seconds <= MAX_MUTE:
        raise TargetError("a mute lasts from 1 second to 30 days")
    return seconds


_DURATION_PART = re.compile(r"(\d{1,7})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _wiki_and_rest(rest: str, what: str) -> tuple[str, str]:
    wiki, _, name = rest.partition(" ")
    if not wiki:
        raise TargetError(f"a wiki and a {what} are needed")
    check_wiki(wiki)
    if not name.strip():
        raise TargetError(f"a {what} is needed after the wiki")
    return wiki, name


def _watch(rest: str) -> Command:
    wiki, title = _wiki_and_rest(rest, "page title")
    return Watch(Target("page", wiki, normalize_title(title)))


def _watchuser(rest: str) -> Command:
    wiki, user = _wiki_and_rest(rest, "user name")
    return Watch(Target("user", wiki, normalize_user(user)))


def _watchfilter(rest: str) -> Command:
    wiki, _, conditions = rest.partition(" ")
    if not wiki:
        raise TargetError("a wiki and conditions are needed")
    check_wiki(wiki)
    try:
        words = shlex.split(conditions)
    except ValueError:
        raise TargetError("unbalanced quotes") from None
    for word in words:
        if word.partition("=")[0].lower() == "min_change":
            # min_change is signed elsewhere (filtered rooms, rcclient): refused, not reread.
            raise TargetError(
                "min_change= is not a watch condition; min=500 is 500 bytes added or removed"
            )
    try:
        found = filters.parse_words(words, keys=FILTER_KEYS, aliases=FILTER_ALIASES)
    except filters.FilterError as exc:
        raise TargetError(str(exc)) from None
    return Watch(filter_target(wiki, found))


def _unwatch(rest: str) -> Command:
    if rest.lower() == "all":
        return UnwatchAll()
    if rest.isdigit():
        return UnwatchNumber(int(rest))
    wiki, title = _wiki_and_rest(rest, "page title (or a number from list)")
    return Unwatch(Target("page", wiki, normalize_title(title)))


def _unwatchuser(rest: str) -> Command:
    wiki, user = _wiki_and_rest(rest, "user name")
    return Unwatch(Target("user", wiki, normalize_user(user)))


def _list(rest: str) -> Command:
    return ListCommand()


def _mute(rest: str) -> Command:
    if not rest:
        raise TargetError("how long?")
    if rest.lower() == "off":
        return Mute(0)
    return Mute(parse_duration(rest))


def _unmute(rest: str) -> Command:
    return Mute(0)


def _help(rest: str) -> Command:
    topic = rest.lower().lstrip("/!") or None
    return Help(topic if topic in USAGE else None)


_PARSERS = {
    "watch": _watch,
    "watchuser": _watchuser,
    "watchfilter": _watchfilter,
    "unwatch": _unwatch,
    "unwatchuser": _unwatchuser,
    "list": _list,
    "mute": _mute,
    "unmute": _unmute,
    "help": _help,
    "?": _help,
}
