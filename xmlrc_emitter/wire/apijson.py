"""The action API's ``list=recentchanges`` JSON items (formatversion 1 and 2).

An API item does not name its wiki or server: those come from
``meta=siteinfo`` and are passed in as `Site`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import coerce
from .errors import DecodeError, RejectReason
from .model import RecentChange

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
    return RecentChange(
        wiki=site.wiki,
        type=coerce.change_type(get("type")),
        ns=coerce.req_int(get("ns"), "ns"),
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
