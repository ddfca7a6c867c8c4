"""The messages a watcher gets: one change, a digest, a reply. Pure: builds stanza text.

A change goes out as a ``chat`` message (so the user's server archives it
and every client shows it as a conversation with the bridge): the body is
the wiki, the readable line and a link to the diff (or the page), and the
message carries the same ``<rc>`` payload as the rooms, for bots.
"""

from __future__ import annotations

from collections.abc import Sequence

from xmlrc.wire import RecentChange, change_to_line
from xmlrc.wire.rcxml import change_to_xml_text, escape_attribute, escape_text
from xmlrc.wire.safexml import xml_safe

#: The wrapper of a digest's ``<rc>`` payloads.
DIGEST_NS = "urn:xmlrc:digest:1"
#: Ids of our notifications start with this, so a bounce is recognised as one.
NOTIFY_PREFIX = "xmlrc-w"


def change_body(change: RecentChange) -> str:
    """``testwiki: [[Sandbox]] ... * Alice * (+7) typo`` and, on the next line, the link."""
    body = f"{change.wiki}: {change_to_line(change)}"
    link = change.diff_url or change.page_url
    return f"{body}\n{link}" if link else body


def digest_line(change: RecentChange) -> str:
    """One change in a digest: shorter than the feed line."""
    size = change.size_change
    parts = [f"{change.wiki}: [[{change.title}]]"]
    if change.is_log:
        parts.append(f"({change.logtype}/{change.logaction})")
    if change.user:
        parts.append(f"by {change.user}")
    if size is not None and not change.is_log:
        parts.append(f"({size:+d})")
    link = change.diff_url or change.page_url
    if link:
        parts.append(link)
    return " ".join(parts)


def digest_body(
    changes: Sequence[RecentChange],
    more: int,
    over_volume: int,
    *,
    since: str,
    daily_limit: int,
) -> str:
    total = len(changes) + more
    lines = []
    if total:
        noun = "change" if total == 1 else "changes"
        lines.append(f"Digest: {total} {noun} you watch since {since}:")
        lines.extend(f"- {digest_line(change)}" for change in changes)
        if more:
            lines.append(f"... and {more} more.")
    if over_volume:
        lines.append(
            f"You reached the daily limit of {daily_limit} changes: "
            f"{over_volume} or more were not sent. They start again within a day."
        )
    return "\n".join(lines)


def chat_text(to: str, body: str, msg_id: str, sender: str | None = None, payload: str = "") -> str:
    """A ``<message type="chat">`` as text, for `send_texts`."""
    sender_attr = f' from="{escape_attribute(sender)}"' if sender else ""
    return (
        f'<message to="{escape_attribute(to)}" type="chat" id="{escape_attribute(msg_id)}"'
        f"{sender_attr}><body>{escape_text(xml_safe(body))}</body>{payload}</message>"
    )


def notification_text(change: RecentChange, to: str, msg_id: str, sender: str | None = None) -> str:
    return chat_text(to, change_body(change), msg_id, sender, change_to_xml_text(change))


def digest_text(
    changes: Sequence[RecentChange],
    body: str,
    to: str,
    msg_id: str,
    sender: str | None = None,
) -> str:
    payload = ""
    if changes:
        inner = "".join(change_to_xml_text(change) for change in changes)
        payload = f'<digest xmlns="{DIGEST_NS}" count="{len(changes)}">{inner}</digest>'
    return chat_text(to, body, msg_id, sender, payload)
