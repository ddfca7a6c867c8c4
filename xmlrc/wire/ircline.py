"""The human-readable ``<body>`` line: MediaWiki's IRC feed line, without colours.

Existing IRC-feed line parsers and plain XMPP clients read it unchanged:

    [[Title]] FLAGS URL * User * (+8) comment
    [[Special:Log/move]] move  * User *  moved [[A]] to [[B]]: reason
"""

from __future__ import annotations

import html
import re

from .model import RecentChange

# Embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a title
# or user name they would reorder the rest of the line as a reader sees it.
# MediaWiki strips the first five from titles and refuses them in new user
# names; the line drops all nine from those positions. ``<rc>`` stays exact,
# and the comment keeps them: it ends the line, so it can reorder only itself.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def change_to_line(change: RecentChange, *, interwiki_prefix: str | None = None) -> str:
    """The IRC feed line of a change, as ``IRCColourfulRCFeedFormatter`` minus colours."""
    if change.is_log:
        title = f"Special:Log/{change.logtype or ''}"
        flag = change.logaction or ""
        url = ""
        comment = change.log_action_comment
        if comment is None:  # sources without the log line (the API) get the plain comment
            comment = change.comment
    else:
        title = change.title
        flag = _flags(change)
        url = _feed_url(change)
        comment = change.comment
    size = ""
    delta = None if change.is_log else change.size_change
    if delta is not None:  # a new page's old length is 0, as on IRC
        size = f"(+{delta})" if delta >= 0 else f"({delta})"
    shown = f"{interwiki_prefix}:{title}" if interwiki_prefix else title
    return (
        f"[[{_unbidi(_cleanup(shown))}]] {_unbidi(_cleanup(flag))} {_one_line(url)} * "
        f"{_unbidi(_cleanup(change.user))}"
        f" * {size} {_cleanup(comment)}"
    )


def _flags(change: RecentChange) -> str:
    flag = "!" if change.patrolled is False else ""
    if change.new:
        flag += "N"
    if change.minor:
        flag += "M"
    if change.bot:
        flag += "B"
    return flag


def _feed_url(change: RecentChange) -> str:
    index = change.index_url
    if index is None:
        return ""
    if change.new:
        query = f"?oldid={change.revid or 0}"
    else:
        query = f"?diff={change.revid or 0}&oldid={change.old_revid or 0}"
    if change.rcid is not None:
        query += f"&rcid={change.rcid}"
    return index + query


def _one_line(text: str) -> str:
    # A URL built from the server fields: no entity decoding ("&not" is an entity).
    return text.replace("\n", " ").replace("\r", "")


def _cleanup(text: str) -> str:
    # As MediaWiki's cleanupForIRC: decode character references, flatten newlines.
    return html.unescape(text).replace("\n", " ").replace("\r", "")


def _unbidi(text: str) -> str:
    if text.isascii():  # nearly every title and user name
        return text
    return _BIDI_CONTROLS.sub("", text)
