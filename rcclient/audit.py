"""Proof of no loss: a room's archive against the wiki's own record, compared (pure).

``rcclient audit`` (`rcclient.cli`) does the I/O: it reads the room's archive
(XEP-0313) and the wiki's ``list=recentchanges`` for one time window, and
hands both lists to `compare`, which says what is

- **missing** from the room: in the API's record, never archived;
- **extra** in the room: archived, unknown to the API (a page deleted since,
  whose rows MediaWiki drops; rows past ``$wgRCMaxAge``; or a forgery the
  trust rules let through);
- **duplicated**: the same stable id (``wiki/rcid``) archived more than once;
- **differing**: in both, with fields that do not agree;
- **unrecorded** (reported, not a mismatch): changes the wiki's
  ``recentchanges`` table never holds, so the API cannot vouch for them:
  those with neither an rcid nor a log id, such as the abuse filter hits
  Wikimedia's EventStreams carries.

The window is the changes' own timestamps, inclusive at both ends: archive
time is not change time (a bridge that was away resends its backlog later),
so the shell reads the archive with a margin either side and `compare`
cuts by the timestamps. A change the API places in the window is matched
wherever it sits in what was read of the archive, so a wrong timestamp shows
as a difference, not as one missing and one extra.

Which fields are compared depends on how the room was fed (`default_fields`):
MediaWiki's UDP feeds (JSON or XML formatter) carry no ``pageid``,
``userid``, ``tags``, ``sha1``, ``parsedcomment``, ``autopatrolled`` or
``redirect``, say null where the API says 0 for a missing old revision,
send no revision, size or patrol flag for log actions, and their log
parameters are raw where the API types them; ``log_action_comment`` exists
only in the feeds; ``redirect`` is the page's state when the API is read,
not at the change. These are the rules measured on a real MediaWiki 1.39 in
``tests/mediawiki/fidelity.py``. A feed's *absence* of a value is excused,
never a value that disagrees.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from xmlrc.wire import RecentChange
from xmlrc.wire.model import FIELD_NAMES, iso_from_utc

from .trust import jid_distrust, publisher_jids

__all__ = [
    "FEEDS",
    "AuditReport",
    "Difference",
    "Feed",
    "Window",
    "archived_distrust",
    "compare",
    "default_fields",
    "parse_fields",
]

Feed = Literal["mediawiki", "rc2udp"]
#: How a room can be fed: MediaWiki's ``$wgRCFeeds`` over UDP (either formatter,
#: with or without a prefix), or ``rc2udp poll`` (which reads the API itself).
FEEDS: tuple[Feed, ...] = ("mediawiki", "rc2udp")

#: Fields the MediaWiki feeds have no key for (``tests/mediawiki/fidelity.py``).
MEDIAWIKI_FEED_LACKS = frozenset(
    {"pageid", "userid", "tags", "sha1", "parsedcomment", "autopatrolled", "redirect"}
)
#: Never compared by default on any path: the API has no ``log_action_comment``,
#: and its ``redirect`` is the page's state when read, not at the change.
NEVER_BY_DEFAULT = frozenset({"log_action_comment", "redirect"})
_REVISION_FIELDS = frozenset({"revid", "old_revid", "oldlen", "newlen"})

_MUC_USER_ITEM = "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"


def default_fields(feed: Feed) -> tuple[str, ...]:
    """The fields compared for a room fed by `feed`, in the event model's order."""
    skip = NEVER_BY_DEFAULT | (MEDIAWIKI_FEED_LACKS if feed == "mediawiki" else frozenset())
    return tuple(name for name in FIELD_NAMES if name not in skip)


def parse_fields(text: str, feed: Feed) -> tuple[str, ...]:
    """``--fields``: a comma-separated list of field names; ``+name`` / ``-name``
    entries add to or remove from `feed`'s defaults instead. ValueError names a bad one."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("--fields: give field names, separated by commas")
    relative = [item[0] in "+-" for item in items]
    if any(relative) and not all(relative):
        raise ValueError("--fields: either names, or +name/-name changes to the defaults")
    names = [item[1:] if item[0] in "+-" else item for item in items]
    for name in names:
        if name not in FIELD_NAMES:
            raise ValueError(f"--fields: no such field: {name!r} (known: {', '.join(FIELD_NAMES)})")
    if not all(relative):
        return tuple(dict.fromkeys(names))
    chosen = set(default_fields(feed))
    for item, name in zip(items, names, strict=True):
        if item[0] == "+":
            chosen.add(name)
        else:
            chosen.discard(name)
    return tuple(name for name in FIELD_NAMES if name in chosen)


@dataclass(frozen=True, slots=True)
class Window:
    """The changes audited: timestamps from `since` to `until`, both included, of `wiki`
    (None: whatever wiki the changes name)."""

    since: datetime
    until: datetime
    wiki: str | None = None

    def holds(self, change: RecentChange) -> bool:
        if self.wiki is not None and change.wiki != self.wiki:
            return False
        return self.since <= change.timestamp <= self.until


@dataclass(frozen=True, slots=True)
class Difference:
    """One change in both records whose `fields` disagree: name -> (room's, wiki's)."""

    change: RecentChange
    fields: Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What `compare` found; ``ok`` only when nothing is missing, extra, duplicated
    or different. Lists are sorted by timestamp, then stable id."""

    window: Window
    fields: tuple[str, ...]
    #: Changes of the window (or matched by id) in the room, each id counted once.
    archived: int
    #: Changes of the window in the wiki's record.
    expected: int
    matched: int
    missing: list[RecentChange] = field(default_factory=list)
    extra: list[RecentChange] = field(default_factory=list)
    #: (the first archived copy, how many times its stable id was archived).
    duplicated: list[tuple[RecentChange, int]] = field(default_factory=list)
    differing: list[Difference] = field(default_factory=list)
    #: In the room, but of a kind the wiki's recentchanges never records (no rcid and
    #: no log id: abuse filter hits); listed, never a mismatch.
    unrecorded: list[RecentChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated or self.differing)

    def counts(self) -> dict[str, int]:
        return {
            "archived": self.archived,
            "expected": self.expected,
            "matched": self.matched,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "duplicated": len(self.duplicated),
            "differing": len(self.differing),
            "unrecorded": len(self.unrecorded),
        }

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-ready object: counts and lists."""
        return {
            "match": self.ok,
            "since": iso_from_utc(self.window.since),
            "until": iso_from_utc(self.window.until),
            "wiki": self.window.wiki,
            "fields": list(self.fields),
            "counts": self.counts(),
            "missing": [_summary(change) for change in self.missing],
            "extra": [_summary(change) for change in self.extra],
            "unrecorded": [_summary(change) for change in self.unrecorded],
            "duplicated": [
                {**_summary(change), "copies": copies} for change, copies in self.duplicated
            ],
            "differing": [
                {
                    **_summary(item.change),
                    "fields": {
                        name: {"room": _plain(room), "wiki": _plain(wiki)}
                        for name, (room, wiki) in item.fields.items()
                    },
                }
                for item in self.differing
            ],
        }

    def text(self) -> str:
        """The report for people: counts, then one line per finding."""
        counts = self.counts()
        lines = [
            f"window {iso_from_utc(self.window.since)} .. {iso_from_utc(self.window.until)}"
            + (f" ({self.window.wiki})" if self.window.wiki else ""),
            f"compared fields: {', '.join(self.fields) or '(none)'}",
            f"in the wiki's record: {counts['expected']}, in the room: {counts['archived']}, "
            f"matched: {counts['matched']}",
        ]
        sections: list[tuple[str, list[str]]] = [
            ("missing from the room", [_line(c) for c in self.missing]),
            ("extra in the room (unknown to the wiki)", [_line(c) for c in self.extra]),
            (
                "not in any wiki's recentchanges (no rcid, no log id; not a mismatch)",
                [_line(c) for c in self.unrecorded],
            ),
            (
                "duplicated in the room",
                [f"{_line(c)}: {copies} copies" for c, copies in self.duplicated],
            ),
            (
                "different",
                [
                    _line(item.change)
                    + "".join(
                        f"\n    {name}: room {room!r}, wiki {wiki!r}"
                        for name, (room, wiki) in item.fields.items()
                    )
                    for item in self.differing
                ],
            ),
        ]
        for title, entries in sections:
            lines.append(f"{title}: {len(entries)}")
            lines.extend(f"  {entry}" for entry in entries)
        if self.ok:
            lines.append("result: the room matches the wiki")
        else:
            found = ", ".join(
                f"{counts[key]} {key}"
                for key in ("missing", "extra", "duplicated", "differing")
                if counts[key]
            )
            lines.append(f"result: MISMATCH ({found})")
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """A field value as JSON can hold it."""
    if isinstance(value, datetime):
        return iso_from_utc(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _summary(change: RecentChange) -> dict[str, Any]:
    return {
        "id": change.stable_id,
        "rcid": change.rcid,
        "timestamp": iso_from_utc(change.timestamp),
        "type": change.type,
        "title": change.title,
        "user": change.user,
        "revid": change.revid,
        "logtype": change.logtype,
        "logaction": change.logaction,
    }


def _line(change: RecentChange) -> str:
    what = f"{change.logtype}/{change.logaction}" if change.is_log else change.type
    return (
        f"{change.stable_id} {iso_from_utc(change.timestamp)} {what} "
        f"[[{change.title}]] by {change.user or '?'}"
    )


def _order(change: RecentChange) -> tuple[datetime, int, str]:
    return (change.timestamp, change.rcid if change.rcid is not None else -1, change.stable_id)


def _excused(name: str, got: Any, want: RecentChange, *, feed: Feed) -> bool:
    """Whether the room's `got` differs from the wiki's only as the feed must
    (the value-level rules of the module docstring; nothing for rc2udp)."""
    if feed != "mediawiki":
        return False
    if name in MEDIAWIKI_FEED_LACKS and (got is None or got is False):
        return True
    if name in _REVISION_FIELDS and got is None:
        return getattr(want, name) == 0 or want.is_log
    if name == "patrolled" and got is None and want.is_log:
        return True
    return name == "logparams" and want.is_log


def _differences(
    got: RecentChange, want: RecentChange, fields: Iterable[str], *, feed: Feed
) -> dict[str, tuple[Any, Any]]:
    found = {}
    for name in fields:
        mine, theirs = getattr(got, name), getattr(want, name)
        if mine != theirs and not _excused(name, mine, want, feed=feed):
            found[name] = (mine, theirs)
    return found


def compare(
    archived: Sequence[RecentChange],
    expected: Sequence[RecentChange],
    fields: Iterable[str],
    *,
    window: Window,
    feed: Feed = "mediawiki",
) -> AuditReport:
    """Compare what the room archived (in archive order, duplicates kept, as read
    with a margin) with the wiki's record for `window`; see the module docstring."""
    names = tuple(fields)
    unknown = [name for name in names if name not in FIELD_NAMES]
    if unknown:
        raise ValueError(f"no such field: {unknown[0]!r}")
    truth: dict[str, RecentChange] = {}
    for change in expected:
        truth.setdefault(change.stable_id, change)
    wanted = {key: change for key, change in truth.items() if window.holds(change)}
    copies: Counter[str] = Counter()
    first: dict[str, RecentChange] = {}
    for change in archived:
        key = change.stable_id
        copies[key] += 1
        first.setdefault(key, change)
    # In scope: what the wiki places in the window, and what only the room has there.
    outside = [c for key, c in first.items() if key not in truth and window.holds(c)]
    # Without an rcid or a log id a change has no recentchanges row to compare with.
    unrecorded = [c for c in outside if c.rcid is None and not c.logid]
    extra = [c for c in outside if c.rcid is not None or c.logid]
    scope = set(wanted) | {c.stable_id for c in extra}
    missing = [change for key, change in wanted.items() if key not in first]
    differing = []
    for key, want in wanted.items():
        got = first.get(key)
        if got is not None:
            found = _differences(got, want, names, feed=feed)
            if found:
                differing.append(Difference(got, found))
    duplicated = [(first[key], copies[key]) for key in scope if copies[key] > 1]
    present = [key for key in scope if key in first]
    return AuditReport(
        window=window,
        fields=names,
        archived=len(present),
        expected=len(wanted),
        matched=len(wanted) - len(missing) - len(differing),
        missing=sorted(missing, key=_order),
        extra=sorted(extra, key=_order),
        duplicated=sorted(duplicated, key=lambda item: _order(item[0])),
        differing=sorted(differing, key=lambda item: _order(item.change)),
        unrecorded=sorted(unrecorded, key=_order),
    )


def archived_distrust(
    message: ET.Element,
    room: str,
    publisher: str,
    publisher_jid: str | Iterable[str] | None = None,
) -> str | None:
    """Why an archived message of `room` is not the publisher's, or None: the trust
    rules `rcclient.RCClient` holds archived messages to (the sender's nick, and the
    affiliation and real JID where a non-anonymous room's archive records them).
    ``publisher_jid`` is one bare JID or several (a bridge pair's two accounts)."""
    accounts = publisher_jids(publisher_jid)
    sender = message.get("from") or ""
    bare, _, nick = sender.partition("/")
    if bare.lower() != room.lower() or nick != publisher:
        return f"sent by {nick or 'someone else'!r}, not by the publisher {publisher!r}"
    for item in message.findall(_MUC_USER_ITEM):
        affiliation = item.get("affiliation")
        if affiliation is not None and affiliation != "owner":
            return f"sent by {nick!r} with affiliation {affiliation!r}"
        distrust = jid_distrust(nick, item.get("jid"), accounts)
        if distrust is not None:
            return distrust
    return None
