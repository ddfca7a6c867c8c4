"""The one event model: `RecentChange`, the only in-memory form of a change.

Field names and meanings are those of the MediaWiki API's ``list=recentchanges``
(``rcprop=*``), plus the wiki ID and the server URL fields that links need.
``None`` means "the source did not say"; it is never silently turned into a
default, so a client can tell an unknown value from a false one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

#: The change types MediaWiki knows (``rc_type``).
ChangeType = Literal["edit", "new", "log", "categorize", "external"]
CHANGE_TYPES: frozenset[str] = frozenset({"edit", "new", "log", "categorize", "external"})

#: A JSON value, as log parameters are.
JSONValue = Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentChange:
    """One recent change on one wiki (an edit, a page creation, a log action...).

    >>> from datetime import datetime, UTC
    >>> c = RecentChange(wiki="enwiki", type="edit", ns=0, title="Foo", user="Alice",
    ...     timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), rcid=14, revid=12,
    ...     old_revid=11, oldlen=10, newlen=18, server_url="https://en.wikipedia.org",
    ...     server_script_path="/w")
    >>> c.size_change
    8
    >>> c.diff_url
    'https://en.wikipedia.org/w/index.php?diff=12&oldid=11'
    >>> c.stable_id
    'enwiki/14'
    """

    wiki: str
    type: str
    ns: int
    title: str
    timestamp: datetime
    user: str = ""
    rcid: int | None = None
    pageid: int | None = None
    revid: int | None = None
    old_revid: int | None = None
    userid: int | None = None
    oldlen: int | None = None
    newlen: int | None = None
    comment: str = ""
    parsedcomment: str | None = None
    anon: bool = False
    bot: bool = False
    minor: bool = False
    redirect: bool = False
    #: True patrolled, False unpatrolled, None unknown (the source did not say).
    patrolled: bool | None = None
    autopatrolled: bool = False
    #: Change tags; None when the source carries none (the UDP feeds never do).
    tags: tuple[str, ...] | None = None
    sha1: str | None = None
    logid: int | None = None
    logtype: str | None = None
    logaction: str | None = None
    #: The log parameters as the source gave them (a JSON object or list).
    logparams: JSONValue = field(default=None, hash=False, compare=True)
    #: The human-readable log line MediaWiki's feeds carry (may hold HTML entities).
    log_action_comment: str | None = None
    server_url: str | None = None
    server_name: str | None = None
    server_script_path: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("RecentChange.timestamp must be timezone-aware")
        if self.timestamp.utcoffset():
            object.__setattr__(self, "timestamp", self.timestamp.astimezone(UTC))

    # -- derived values -----------------------------------------------------------

    @property
    def new(self) -> bool:
        """True for a page creation (the API's ``new`` flag)."""
        return self.type == "new"

    @property
    def is_log(self) -> bool:
        """True for a log action (move, delete, block, new user...)."""
        return self.type == "log"

    @property
    def size_change(self) -> int | None:
        """Bytes added (positive) or removed (negative); None when unknown."""
        if self.newlen is None:
            return None
        return self.newlen - (self.oldlen or 0)

    @property
    def stable_id(self) -> str:
        """An id that names this change on every path, for dropping duplicates.

        ``wiki/rcid`` when the wiki gave the change an rcid; manual patrols come
        without one, so then ``wiki/log/logid``; failing both (abuse filter hits
        have no rcid and log id 0: every one of them would share ``wiki/log/0``),
        a hash of what tells such changes apart, their log parameters included.
        """
        if self.rcid is not None:
            return f"{self.wiki}/{self.rcid}"
        if self.logid:
            return f"{self.wiki}/log/{self.logid}"
        params = "" if self.logparams is None else json.dumps(self.logparams, sort_keys=True)
        digest = hashlib.sha256(
            "\x1f".join(
                (
                    self.type,
                    str(self.ns),
                    self.title,
                    self.user,
                    self.timestamp.isoformat(),
                    self.logtype or "",
                    self.logaction or "",
                    params,
                    self.comment,
                )
            ).encode()
        ).hexdigest()[:16]
        return f"{self.wiki}/h/{digest}"

    @property
    def index_url(self) -> str | None:
        """The wiki's ``index.php`` URL, when the server is known."""
        if not self.server_url:
            return None
        script_path = (self.server_script_path or "").rstrip("/")
        return f"{self.server_url.rstrip('/')}{script_path}/index.php"

    @property
    def page_url(self) -> str | None:
        """A link to the page (for a log action: its target page)."""
        return self._title_url(self.title)

    @property
    def diff_url(self) -> str | None:
        """A link to the diff of an edit, or the first revision of a new page."""
        index = self.index_url
        if index is None or self.revid is None:
            return None
        if self.type == "new":
            return f"{index}?oldid={self.revid}"
        if self.type == "edit":
            return f"{index}?diff={self.revid}&oldid={self.old_revid or 0}"
        return None

    @property
    def user_is_ip(self) -> bool:
        """True when the user name is an IP address (an anonymous edit)."""
        return is_ip_address(self.user)

    @property
    def is_anonymous(self) -> bool:
        """True for a logged-out editor (the anon flag, or an IP address as user)."""
        return self.anon or self.user_is_ip

    def _title_url(self, title: str, query: str = "") -> str | None:
        index = self.index_url
        if index is None:
            return None
        return f"{index}?title={quote(title.replace(' ', '_'), safe=':/')}{query}"

    @property
    def permalink_url(self) -> str | None:
        """The page as this change left it (a link that never changes)."""
        index = self.index_url
        if index is None or not self.revid:
            return None
        return f"{index}?oldid={self.revid}"

    @property
    def history_url(self) -> str | None:
        """The page's history."""
        return self._title_url(self.title, "&action=history")

    @property
    def user_url(self) -> str | None:
        """The user's page, or an anonymous editor's contributions (IPs have no page)."""
        if not self.user:
            return None
        if self.is_anonymous:
            return self.contributions_url
        return self._title_url(f"User:{self.user}")

    @property
    def contributions_url(self) -> str | None:
        """Everything the user did."""
        if not self.user:
            return None
        return self._title_url(f"Special:Contributions/{self.user}")

    def with_changes(self, **changes: Any) -> RecentChange:
        """A copy with some fields replaced (the dataclass is frozen)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Field name to value, in declaration order (no copying of logparams)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RecentChange))


_IP_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")


def is_ip_address(text: str) -> bool:
    """True for an IPv4 or IPv6 address, as MediaWiki shows anonymous editors."""
    if not _IP_CHARS.fullmatch(text):  # most user names: no need to try harder
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def utc_from_unix(seconds: int | float) -> datetime:
    """A Unix timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def utc_from_iso(text: str) -> datetime:
    """An ISO 8601 timestamp (``2026-01-02T03:04:05Z``) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return parsed.astimezone(UTC)


def iso_from_utc(moment: datetime) -> str:
    """The API's timestamp form: ``2026-01-02T03:04:05Z`` (microseconds kept if any)."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"
