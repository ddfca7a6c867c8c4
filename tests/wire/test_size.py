"""`encoded_size`: exact on real changes, and the worst case the limits allow."""

from __future__ import annotations

from tests.fixtures import JSON_FEED_PORT, packets
from xmlrc.wire import RecentChange, change_to_line, decode_datagram
from xmlrc.wire.apijson import Site, change_from_api
from xmlrc.wire.coerce import (
    FIELD_LIMITS,
    MAX_LOGPARAMS_CHARS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
)
from xmlrc.wire.rcxml import change_to_xml_text, escape_text
from xmlrc.wire.safexml import xml_safe
from xmlrc.wire.size import WORST_CASE_SIZE, encoded_size, worst_case_size


def message_part(change: RecentChange) -> bytes:
    """What a change puts in its room message (as udp2xmpp.sink.stanza builds it)."""
    body = escape_text(xml_safe(change_to_line(change)))
    return f"<body>{body}</body>{change_to_xml_text(change)}".encode()


def test_encoded_size_is_exact_on_every_real_change() -> None:
    changes = [decode_datagram(packet) for packet in packets(JSON_FEED_PORT)]
    assert all(isinstance(change, RecentChange) for change in changes)
    sizes = [encoded_size(change) for change in changes]  # type: ignore[arg-type]
    assert sizes == [len(message_part(change)) for change in changes]  # type: ignore[arg-type]
    assert max(sizes) < 4096  # what real changes weigh: a few hundred bytes to 3 KB


def worst_change() -> RecentChange:
    """The largest message a decoder lets through: every field at its limit, each
    filled with the character that escaping grows most where it goes."""
    limit = FIELD_LIMITS
    item = {
        "type": "log", "ns": -(2**31), "title": "&" * limit["title"], "user": "&" * limit["user"],
        "comment": "&" * limit["comment"], "parsedcomment": '"' * limit["parsedcomment"],
        "timestamp": "9999-12-31T23:59:59.999999Z", "sha1": '"' * limit["sha1"],
        "logtype": "&" * limit["logtype"], "logaction": "&" * limit["logaction"],
        "tags": ["&" * MAX_TAG_LENGTH] * MAX_TAGS,
        "logparams": ["&" * (MAX_LOGPARAMS_CHARS - 4)],
        "anon": True, "bot": True, "minor": True, "redirect": True, "autopatrolled": True,
        "unpatrolled": True, **dict.fromkeys(
            ["rcid", "pageid", "revid", "old_revid", "userid", "oldlen", "newlen", "logid"],
            2**63 - 1),
    }  # fmt: skip
    site = Site(
        "w" * 64, '"' * limit["server_url"], '"' * limit["server_name"],
        '"' * limit["server_script_path"],
    )  # fmt: skip
    change = change_from_api(item, site)
    # The API carries no log line; the feeds do, and it is the longer text of the body.
    return change.with_changes(log_action_comment="&" * limit["log_action_comment"])


def test_the_worst_case_bounds_the_largest_change_the_limits_allow() -> None:
    change = worst_change()
    size = encoded_size(change)
    assert size == len(message_part(change))
    assert size <= WORST_CASE_SIZE == worst_case_size()
    # The bound is close: the limits really allow a message this large.
    assert size > 0.95 * WORST_CASE_SIZE
    assert WORST_CASE_SIZE > 64 * 1024  # why the bridge checks encoded_size at intake
