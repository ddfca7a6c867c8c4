"""The model's helpers: links and derived values a bot wants without parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from xmlrc.wire import RecentChange

BASE = RecentChange(
    wiki="enwiki", type="edit", ns=0, title="Main Page", user="Alice",
    timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), rcid=14, revid=12, old_revid=11,
    oldlen=10, newlen=18, server_url="https://en.wikipedia.org", server_script_path="/w",
)  # fmt: skip
INDEX = "https://en.wikipedia.org/w/index.php"


def test_links() -> None:
    assert BASE.page_url == f"{INDEX}?title=Main_Page"
    assert BASE.diff_url == f"{INDEX}?diff=12&oldid=11"
    assert BASE.permalink_url == f"{INDEX}?oldid=12"
    assert BASE.history_url == f"{INDEX}?title=Main_Page&action=history"
    assert BASE.user_url == f"{INDEX}?title=User:Alice"
    assert BASE.contributions_url == f"{INDEX}?title=Special:Contributions/Alice"
    new = BASE.with_changes(type="new", old_revid=None, oldlen=None)
    assert new.diff_url == f"{INDEX}?oldid=12" and new.size_change == 18 and new.new


def test_titles_are_escaped_in_links() -> None:
    odd = BASE.with_changes(title="A&B ?/ü")
    assert odd.page_url == f"{INDEX}?title=A%26B_%3F/%C3%BC"


def test_anonymous_editors() -> None:
    ip = BASE.with_changes(user="2001:db8::1")
    assert ip.is_anonymous and not BASE.is_anonymous
    assert ip.user_url == f"{INDEX}?title=Special:Contributions/2001:db8::1"


def test_no_links_without_a_server_and_none_for_logs() -> None:
    bare = BASE.with_changes(server_url=None)
    assert bare.page_url is bare.diff_url is bare.user_url is None
    log = BASE.with_changes(type="log", logtype="delete")
    assert log.is_log and log.diff_url is None and log.page_url == f"{INDEX}?title=Main_Page"


def test_timestamps_are_aware_and_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BASE.with_changes(timestamp=datetime(2026, 1, 1))  # noqa: DTZ001
    shifted = BASE.with_changes(
        timestamp=datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    )
    assert shifted.timestamp == BASE.timestamp and shifted.timestamp.tzinfo == UTC


def test_stable_id_without_rcid() -> None:
    patrol = BASE.with_changes(rcid=None, type="log", logid=13)
    assert patrol.stable_id == "enwiki/log/13"
    unknown = BASE.with_changes(rcid=None)
    assert unknown.stable_id.startswith("enwiki/h/") and unknown.stable_id == unknown.stable_id
