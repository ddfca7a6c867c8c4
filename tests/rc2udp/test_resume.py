"""The resume point (pure): whatever the pages, polls and late rows, each change is sent once.

A model of ``list=recentchanges`` (rows ordered by time then rcid, ``rcstart``
inclusive, ``rclimit`` pages with continuation, rows that become visible
after newer ones) is polled with `recentchanges_query` and `unsent` exactly
as rc2udp polls a wiki; hypothesis varies everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from xmlrc.wire import RecentChange
from xmlrc.wire.apijson import (
    RCPROP,
    ResumePoint,
    recentchanges_query,
    unsent,
)
from xmlrc.wire.model import utc_from_iso

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def at(second: int) -> datetime:
    return EPOCH + timedelta(seconds=second)


def change(rcid: int, second: int) -> RecentChange:
    return RecentChange(wiki="w", type="edit", ns=0, title="T", timestamp=at(second), rcid=rcid)


@dataclass
class ModelWiki:
    """Rows (second, rcid); a new row is at most `lateness` seconds older than `now`."""

    now: int = 100
    rows: list[tuple[int, int]] = field(default_factory=list)

    def edit(self, advance: int, late: int) -> None:
        self.now += advance
        self.rows.append((self.now - late, len(self.rows) + 1))

    def page(
        self, rcstart: datetime, after: tuple[int, int] | None, limit: int
    ) -> tuple[list[RecentChange], tuple[int, int] | None]:
        start = int((rcstart - EPOCH).total_seconds())
        ordered = sorted(r for r in self.rows if r[0] >= start and (after is None or r >= after))
        chunk = ordered[:limit]
        following = ordered[limit] if len(ordered) > limit else None
        return [change(rcid, second) for second, rcid in chunk], following


def poll(
    wiki: ModelWiki,
    resume: ResumePoint,
    *,
    limit: int,
    lookback: int,
    edits_between_pages: list[tuple[int, int] | None],
    sent: list[int],
) -> ResumePoint:
    """One poll, page by page; after page n the n-th edit (if not None) lands."""
    settled = at(wiki.now)  # the first page's curtimestamp
    rcstart = utc_from_iso(recentchanges_query(resume)["rcstart"])
    cursor: tuple[int, int] | None = None
    pending = list(edits_between_pages)
    asked = resume  # every page of this poll answers the query made from here
    for _ in range(10_000):
        page, cursor = wiki.page(rcstart, cursor, limit)
        fresh, resume = unsent(
            resume, page, lookback=timedelta(seconds=lookback), settled=settled, query=asked
        )
        sent.extend(c.rcid for c in fresh if c.rcid is not None)
        if cursor is None:
            return resume
        if pending and (edit := pending.pop(0)) is not None:
            wiki.edit(*edit)
    raise AssertionError("the model never ran out of pages")


operations = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(
            st.just("poll"),
            st.integers(1, 4),
            st.lists(st.none() | st.tuples(st.integers(0, 4), st.integers(0, 3)), max_size=6),
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(3, 6))
# Found by hypothesis: a row made late during one poll, then found on the second page of
# the next, after the first page had moved the resume point past its second.
@example(
    [
        ("edit", 0, 0),
        ("edit", 0, 0),
        ("poll", 1, [(1, 0), (3, 0)]),
        ("poll", 1, [(0, 0)]),
        ("poll", 1, [(0, 1), (3, 0)]),
        ("poll", 1, []),
    ],
    3,
)
def test_every_change_is_sent_once_with_late_rows_within_the_lookback(
    ops: list[tuple[Any, ...]], lookback: int
) -> None:
    wiki = ModelWiki()
    since = wiki.now
    resume = ResumePoint.start(at(since))
    sent: list[int] = []
    for op in ops:
        if op[0] == "edit":
            wiki.edit(op[1], op[2])  # rows are at most 3 s late
        else:
            limit, between = op[1], op[2]
            resume = poll(
                wiki, resume, limit=limit, lookback=lookback, edits_between_pages=between, sent=sent
            )
    # Finally everything is visible: one more poll collects the rest.
    resume = poll(wiki, resume, limit=3, lookback=lookback, edits_between_pages=[], sent=sent)
    assert len(sent) == len(set(sent)), "a change was sent twice"
    assert set(sent) == {rcid for second, rcid in wiki.rows if second >= since}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 3)), max_size=40))
def test_no_lookback_rows_in_order_timestamp_and_rcids_at_that_second_suffice(
    steps: list[tuple[int, int]],
) -> None:
    """The plain resume point: the newest second, and the rcids already sent at it."""
    wiki = ModelWiki()
    resume = ResumePoint.start(at(wiki.now))
    sent: list[int] = []
    for advance, limit in steps:
        wiki.edit(advance, 0)  # many changes in the same second
        resume = poll(wiki, resume, limit=limit, lookback=0, edits_between_pages=[], sent=sent)
        assert resume.query_start == resume.timestamp
        assert all(moment == resume.timestamp for _, moment in resume.seen)
    assert sorted(sent) == [rcid for _, rcid in wiki.rows]


def test_a_fresh_start_sends_nothing_older_however_long_the_lookback() -> None:
    wiki = ModelWiki()
    wiki.edit(0, 0)  # before the start
    resume = ResumePoint.start(at(wiki.now + 1))
    wiki.edit(1, 0)
    sent: list[int] = []
    resume = poll(wiki, resume, limit=10, lookback=3600, edits_between_pages=[], sent=sent)
    assert sent == [2]
    assert resume.query_start == at(101)  # never before the start


def test_a_row_later_than_the_lookback_is_lost_which_is_what_the_lookback_is_for() -> None:
    wiki = ModelWiki()
    resume = ResumePoint.start(at(wiki.now))
    sent: list[int] = []
    wiki.edit(10, 0)
    resume = poll(wiki, resume, limit=10, lookback=2, edits_between_pages=[], sent=sent)
    wiki.edit(0, 5)  # visible 5 s after its time: more than the 2 s lookback
    resume = poll(wiki, resume, limit=10, lookback=2, edits_between_pages=[], sent=sent)
    assert sent == [1]
    wiki.edit(0, 1)  # 1 s late: found
    poll(wiki, resume, limit=10, lookback=2, edits_between_pages=[], sent=sent)
    assert sent == [1, 3]


def test_a_row_that_shows_up_behind_a_long_poll_is_found_by_the_next() -> None:
    """While a poll pages on, a row appears behind its cursor, and newer ones ahead:
    the next poll still starts early enough (``settled``), not at newest - lookback."""
    wiki = ModelWiki()
    resume = ResumePoint.start(at(wiki.now))
    for _ in range(6):
        wiki.edit(1, 0)  # rows 1..6 at 101..106
    sent: list[int] = []
    # The poll begins at 106; after its 4th page row 7 shows up for 103 (3 s late,
    # behind the cursor), after the 5th row 8 for 111 (ahead).
    between = [None, None, None, (0, 3), (5, 0)]
    resume = poll(wiki, resume, limit=1, lookback=3, edits_between_pages=between, sent=sent)
    assert sent == [1, 2, 3, 4, 5, 6, 8]
    poll(wiki, resume, limit=10, lookback=3, edits_between_pages=[], sent=sent)
    assert sent == [1, 2, 3, 4, 5, 6, 8, 7]


def test_query_parameters() -> None:
    resume = ResumePoint(at(50), ((7, at(49)),), at(40))
    params = recentchanges_query(resume, prop=RCPROP, limit=500)
    assert params == {
        "action": "query",
        "list": "recentchanges",
        "rcdir": "newer",
        "rcstart": "2026-01-01T00:00:40Z",
        "rcprop": RCPROP,
        "rctype": "edit|new|log|categorize|external",
        "rclimit": "500",
        "curtimestamp": "1",
        "format": "json",
        "formatversion": "2",
    }
    assert recentchanges_query(ResumePoint(at(50)))["rcstart"] == "2026-01-01T00:00:50Z"


def test_resume_point_json_round_trip() -> None:
    resume = ResumePoint(at(50), ((7, at(49)), (9, at(50))), at(40))
    data = resume.to_json()
    assert data == {
        "timestamp": "2026-01-01T00:00:50Z",
        "rcstart": "2026-01-01T00:00:40Z",
        "seen": [[7, "2026-01-01T00:00:49Z"], [9, "2026-01-01T00:00:50Z"]],
    }
    assert ResumePoint.from_json(data) == resume
    assert ResumePoint.from_json({"timestamp": "2026-01-01T00:00:50Z"}) == ResumePoint(at(50))
