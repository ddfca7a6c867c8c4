"""Fidelity: each delivered change against what the API reports for it, field by field.

The one place where a delivered `RecentChange` (from a MediaWiki feed through
the bridge, or from rc2udp) is compared with the API's ``list=recentchanges``
row for the same rcid.  Every field of the event model gets a verdict:

- ``=``: equal;
- ``not carried``: the path cannot carry it, for a stated reason (the UDP
  feeds have no ``pageid``, ``tags``...; they say null where the API says 0;
  the API reshapes log parameters).  Only a feed's *absence* of a value is
  excused this way: a value the feed does carry must equal the API's;
- ``feed only``: the feed has it and the API has not (``log_action_comment``);
- ``read later``: a value the API computes when asked (``redirect`` is the
  page's state now, not at the change), read at two different moments;
- ``DIFFERS``: a real mismatch.  Tests fail on any.

`FidelityReport.table()` prints it all at a glance: one row per field, one
column per path, with the reasons below.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from xmlrc.wire import RecentChange
from xmlrc.wire.model import FIELD_NAMES

MATCH = "="
NOT_CARRIED = "not carried"
FEED_ONLY = "feed only"
READ_LATER = "read later"
DIFFERS = "DIFFERS"
_ORDER = (MATCH, NOT_CARRIED, FEED_ONLY, READ_LATER, DIFFERS)

#: Fields the MediaWiki feeds (JSON and XML formatter) have no key for.
_FEEDS_LACK = {
    "pageid": "the feeds have no page id",
    "userid": "the feeds have no user id",
    "tags": "the feeds have no change tags",
    "sha1": "the feeds have no content hash",
    "parsedcomment": "the feeds have no HTML comment",
    "autopatrolled": "the feeds have no autopatrolled flag",
    "redirect": "the feeds have no redirect flag (the API's is the page's state now)",
}
_REVISION_FIELDS = ("revid", "old_revid", "oldlen", "newlen")


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str
    reason: str = ""


def judge(name: str, got: Any, want: Any, change: RecentChange, *, feed: bool) -> Verdict:
    """The verdict for one field: `got` (delivered) against `want` (the API's).

    With ``feed=False`` (rc2udp, which reads the API itself) nothing is
    excused but ``redirect`` read at another moment.
    """
    if got == want:
        return Verdict(MATCH)
    if not feed:
        if name == "redirect":
            return Verdict(READ_LATER, "the API's redirect flag is the page's state when read")
        return Verdict(DIFFERS)
    absent = got is None or got is False
    if name in _FEEDS_LACK and absent:
        return Verdict(NOT_CARRIED, _FEEDS_LACK[name])
    if name in _REVISION_FIELDS and got is None:
        if want == 0:
            return Verdict(NOT_CARRIED, "the feeds say null where the API says 0")
        if change.is_log:
            return Verdict(NOT_CARRIED, "the feeds send no revision or size for log actions")
    if name == "patrolled" and got is None and change.is_log:
        return Verdict(NOT_CARRIED, "the feeds send no patrol flag for log actions")
    if name == "logparams" and change.is_log:
        return Verdict(NOT_CARRIED, "the API reshapes and types log params (feed: raw params)")
    if name == "log_action_comment" and want is None:
        return Verdict(FEED_ONLY, "the API has no log_action_comment")
    return Verdict(DIFFERS)


@dataclass(frozen=True, slots=True)
class Mismatch:
    path: str
    rcid: int | None
    field: str
    got: Any
    want: Any


class FidelityReport:
    """Verdicts for many changes on several paths; a printable table."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.changes: Counter[str] = Counter()
        self._counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._reasons: dict[str, set[str]] = defaultdict(set)
        self.mismatches: list[Mismatch] = []

    def compare(self, path: str, got: RecentChange, want: RecentChange, *, feed: bool) -> None:
        """Judge every field of `got` against `want` (the API's row) on `path`."""
        if path not in self.paths:
            self.paths.append(path)
        self.changes[path] += 1
        for name in FIELD_NAMES:
            value, truth = getattr(got, name), getattr(want, name)
            verdict = judge(name, value, truth, want, feed=feed)
            self._counts[(path, name)][verdict.status] += 1
            if verdict.reason:
                self._reasons[name].add(verdict.reason)
            if verdict.status == DIFFERS:
                self.mismatches.append(Mismatch(path, got.rcid, name, value, truth))

    def count(self, path: str, name: str, status: str) -> int:
        return self._counts[(path, name)][status]

    def _cell(self, path: str, name: str) -> str:
        counts = self._counts[(path, name)]
        return ", ".join(f"{counts[s]} {s}" for s in _ORDER if counts[s]) or "-"

    def table(self) -> str:
        """One row per field, one column per path, reasons and mismatches below."""
        headers = ["field", *(f"{p} ({self.changes[p]})" for p in self.paths)]
        rows = [[name, *(self._cell(p, name) for p in self.paths)] for name in FIELD_NAMES]
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = [
            "Fidelity: every delivered change vs the API's list=recentchanges row (same rcid)",
            line(headers),
            line(["-" * w for w in widths]),
            *(line(r) for r in rows),
            "",
            f"'{MATCH}' equal; '{NOT_CARRIED}' the path has no such value (reason below); "
            f"'{FEED_ONLY}' only the feed has it; '{READ_LATER}' the API's answer changed "
            f"between two reads; '{DIFFERS}' a real mismatch (fails the test)",
        ]
        for name in FIELD_NAMES:
            for reason in sorted(self._reasons.get(name, ())):
                out.append(f"  {name}: {reason}")
        for m in self.mismatches[:40]:
            out.append(f"  DIFFERS {m.path} rcid {m.rcid} {m.field}: {m.got!r} != {m.want!r}")
        return "\n".join(out)
