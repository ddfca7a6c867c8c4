"""The human-readable ``<body>`` line: MediaWiki's IRC feed line, without colours.

Existing IRC-feed line parsers and plain XMPP clients read it unchanged:

    [[Title]] FLAGS URL * User * (+8) comment
    [[Special:Log/move]] move  * User *  moved [[A]] to [[B]]: reason
"""

from __future__ import annotations

import html

from .model import RecentChange


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
        f"[[{_cleanup(shown)}]] {flag} {url} * {_cleanup(change.user)} * {size} {_cleanup(comment)}"
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


def _cleanup(text: str) -> str:
    # As MediaWiki's cleanupForIRC: decode character references, flatten newlines.
    return html.unescape(text).replace("\n", " ").replace("\r", "")
