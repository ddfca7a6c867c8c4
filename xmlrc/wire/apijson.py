"""The action API's ``list=recentchanges`` JSON items (formatversion 1 and 2).

An API item does not name its wiki or server: those come from
``meta=siteinfo`` and are passed in as `Site`.

Polling is pure here too (``rc2udp`` only does the I/O): `site_from_siteinfo`,
`recentchanges_query` and the `ResumePoint` that `unsent` advances page by
page, so no change is lost or sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import coerce
from .errors import DecodeError, RejectReason
from .model import RecentChange, iso_from_utc

#: Every ``rcprop`` the event model needs.
RCPROP = (
    "user|userid|comment|parsedcomment|flags|timestamp|title|ids|sizes|redirect"
    "|patrolled|loginfo|tags|sha1"
)


@dataclass(frozen=True, slots=True)
class Site:
    """What ``meta=siteinfo`` tells about a wiki (``wikiid``, ``server``, ``scriptpath``)."""

    wiki: str
    server_url: str | None = None
    server_name: str | None = None
    server_script_path: str | None = None


def change_from_api(item: Any, site: Site) -> RecentChange:
    """Decode one ``recentchanges`` item of either formatversion."""
    if not isinstance(item, dict):
        raise DecodeError(RejectReason.BAD_JSON, "not a JSON object")
    get = item.get

    def flag(name: str) -> bool:
        value = get(name, False)
        # formatversion=2 says true/false; formatversion=1 says "" for true, nothing for false.
        return value is True or value == ""

    if "patrolled" in item and flag("patrolled"):
        patrolled: bool | None = True
    elif ("unpatrolled" in item and flag("unpatrolled")) or get("patrolled") is False:
        patrolled = False
    else:
        patrolled = None
    change = RecentChange(
        wiki=site.wiki,
        type=coerce.change_type(get("type")),
        ns=coerce.namespace(get("ns"), "ns"),
        title=coerce.req_str(get("title"), "title"),
        timestamp=coerce.iso_time(get("timestamp")),
        user=coerce.opt_str(get("user"), "user") or "",
        rcid=coerce.opt_int(get("rcid"), "rcid"),
        pageid=coerce.opt_int(get("pageid"), "pageid"),
        revid=coerce.opt_int(get("revid"), "revid"),
        old_revid=coerce.opt_int(get("old_revid"), "old_revid"),
        userid=coerce.opt_int(get("userid"), "userid"),
        oldlen=coerce.opt_int(get("oldlen"), "oldlen"),
        newlen=coerce.opt_int(get("newlen"), "newlen"),
        comment=coerce.opt_str(get("comment"), "comment") or "",
        parsedcomment=coerce.opt_str(get("parsedcomment"), "parsedcomment"),
        anon=flag("anon"),
        bot=flag("bot"),
        minor=flag("minor"),
        redirect=flag("redirect"),
        patrolled=patrolled,
        autopatrolled=flag("autopatrolled"),
        tags=coerce.str_list(get("tags"), "tags"),
        sha1=coerce.opt_str(get("sha1"), "sha1"),
        logid=coerce.opt_int(get("logid"), "logid"),
        logtype=coerce.opt_str(get("logtype"), "logtype"),
        logaction=coerce.opt_str(get("logaction"), "logaction"),
        logparams=get("logparams"),
        server_url=site.server_url,
        server_name=site.server_name,
        server_script_path=site.server_script_path,
    )
    return coerce.checked(change)


# -- polling: siteinfo, query parameters and the resume point (pure) ----------------

#: Every change type MediaWiki records (the API's default leaves out ``external``).
RCTYPE = "edit|new|log|categorize|external"
#: Rights that let a user read the ``patrolled`` flags (else ``rcprop=patrolled`` is refused).
PATROL_RIGHTS = frozenset({"patrol", "patrolmarks"})


def rcprop(*, patrolled: bool = True) -> str:
    """`RCPROP`, without ``patrolled`` for a user who may not read patrol flags."""
    if patrolled:
        return RCPROP
    return "|".join(prop for prop in RCPROP.split("|") if prop != "patrolled")


def site_from_siteinfo(general: Any, api_url: str | None = None) -> Site:
    """`Site` from ``meta=siteinfo``'s ``general`` object, as the feeds describe the wiki.

    The feeds send ``$wgCanonicalServer``; siteinfo gives ``$wgServer``, which
    may be protocol-relative (``//en.wikipedia.org``): then the scheme of
    `api_url` (the URL actually used) completes it. An empty script path is
    ``/``, as the feeds write it.
    """
    if not isinstance(general, dict):
        raise DecodeError(RejectReason.BAD_JSON, "siteinfo: general is not an object")
    wiki = coerce.wiki_id(general.get("wikiid"), "wikiid")
    server = coerce.opt_str(general.get("server"), "server")
    if server is not None and server.startswith("//"):
        scheme = api_url.partition("://")[0] if api_url and "://" in api_url else "https"
        server = f"{scheme}:{server}"
    script_path = coerce.opt_str(general.get("scriptpath"), "scriptpath")
    return Site(
        wiki=wiki,
        server_url=server,
        server_name=coerce.opt_str(general.get("servername"), "servername"),
        server_script_path=script_path or "/",
    )


def can_read_patrolled(userinfo: Any) -> bool:
    """Whether ``meta=userinfo&uiprop=rights`` shows a right to read patrol flags."""
    rights = userinfo.get("rights") if isinstance(userinfo, dict) else None
    return isinstance(rights, list) and not PATROL_RIGHTS.isdisjoint(rights)


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where polling continues, so that no change is lost and none is sent twice.

    The next query asks for the changes from ``rcstart`` on (inclusive,
    ``rcdir=newer``) and skips the rcids in ``seen``: the changes already
    sent whose time is ``rcstart`` or later.  ``timestamp`` is the newest
    change time sent (or where polling began).

    With no lookback, ``rcstart`` is that newest time and ``seen`` the rcids
    sent at that very second.  A lookback keeps ``rcstart`` that many seconds
    further back, for changes that become visible after newer ones (a slow
    transaction, a lagging replica): they are still found, and those already
    sent are still skipped.  ``rcstart`` never moves backwards, so nothing
    older than where polling began is ever sent.
    """

    timestamp: datetime
    seen: tuple[tuple[int, datetime], ...] = ()
    rcstart: datetime | None = None

    @classmethod
    def start(cls, moment: datetime) -> ResumePoint:
        """A fresh start: the changes from `moment` on."""
        return cls(moment, (), moment)

    @property
    def query_start(self) -> datetime:
        return self.rcstart if self.rcstart is not None else self.timestamp

    @property
    def rcids(self) -> frozenset[int]:
        return frozenset(rcid for rcid, _ in self.seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": iso_from_utc(self.timestamp),
            "rcstart": iso_from_utc(self.query_start),
            "seen": [[rcid, iso_from_utc(moment)] for rcid, moment in self.seen],
        }

    @classmethod
    def from_json(cls, data: Any) -> ResumePoint:
        if not isinstance(data, dict):
            raise DecodeError(RejectReason.BAD_JSON, "resume point: not an object")
        seen = data.get("seen", [])
        if not isinstance(seen, list) or not all(
            isinstance(pair, list) and len(pair) == 2 for pair in seen
        ):
            raise coerce.bad("seen", "not a list of [rcid, timestamp] pairs")
        rcstart = data.get("rcstart")
        return cls(
            coerce.iso_time(data.get("timestamp")),
            tuple(sorted((coerce.req_int(r, "seen"), coerce.iso_time(t, "seen")) for r, t in seen)),
            coerce.iso_time(rcstart, "rcstart") if rcstart is not None else None,
        )


def recentchanges_query(
    resume: ResumePoint, *, prop: str = RCPROP, limit: int | str = "max"
) -> dict[str, str]:
    """The parameters of a ``list=recentchanges`` query that continues from `resume`.

    Oldest first (``rcdir=newer``) from ``rcstart``; follow the answer's
    ``continue`` object (merge it into these parameters) for the next page.
    ``curtimestamp`` asks for the server's time, for `unsent`'s ``settled``.
    """
    return {
        "action": "query",
        "list": "recentchanges",
        "rcdir": "newer",
        "rcstart": iso_from_utc(resume.query_start.replace(microsecond=0)),
        "rcprop": prop,
        "rctype": RCTYPE,
        "rclimit": str(limit),
        "curtimestamp": "1",
        "format": "json",
        "formatversion": "2",
    }


def unsent(
    resume: ResumePoint,
    page: list[RecentChange],
    *,
    lookback: timedelta = timedelta(0),
    settled: datetime | None = None,
    query: ResumePoint | None = None,
) -> tuple[list[RecentChange], ResumePoint]:
    """Of one page of answers (in API order), the changes not sent yet, and the
    resume point once they are sent.

    `settled` is the server's time when this poll began (the first page's
    ``curtimestamp``): a change still invisible then is at most `lookback`
    older than it, so the next ``rcstart`` stays at or before
    ``min(newest, settled) - lookback`` (however far a long catch-up got).
    A change without an rcid cannot be recognised again, so it is always new
    (``list=recentchanges`` always gives rcids).

    `query` is the resume point this round's query was made from (default:
    `resume`): the later pages of a round answer that query, so a change is
    judged against it, not against the point the earlier pages moved on to (a
    late change behind them is still new, one sent in an earlier round still not).
    """
    asked = resume if query is None else query
    already = asked.rcids | resume.rcids
    start = asked.query_start
    fresh = [
        change
        for change in page
        if (change.rcid is None or change.rcid not in already) and change.timestamp >= start
    ]
    newest = max([resume.timestamp, *(change.timestamp for change in page)])
    reach = newest if settled is None else min(newest, settled)
    rcstart = max(start, reach - lookback)
    seen = {(rcid, moment) for rcid, moment in resume.seen if moment >= rcstart}
    seen.update(
        (change.rcid, change.timestamp)
        for change in page
        if change.rcid is not None and change.timestamp >= rcstart
    )
    return fresh, ResumePoint(newest, tuple(sorted(seen)), rcstart)
