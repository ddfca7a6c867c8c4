"""JSON in the shape of Wikimedia's ``mediawiki/recentchange`` schema.

MediaWiki's ``JSONRCFeedFormatter`` sends exactly this shape over UDP, and
EventStreams serves it, so one codec reads the feed and writes what
``rcclient tail --json`` prints: jq recipes written for EventStreams work
unchanged. Fields the schema lacks but the API has (``pageid``, ``userid``,
``tags``...) are written under their API names when known, and read back,
so a change survives the trip whole.
"""

from __future__ import annotations

import json
from typing import Any

from . import coerce
from .errors import DecodeError, RejectReason
from .model import RecentChange, iso_from_utc

SCHEMA_URI = "/mediawiki/recentchange/1.0.0"
STREAM = "mediawiki.recentchange"

# API-named fields outside the schema, written when known.
_EXTRA_INTS = ("pageid", "userid")
_EXTRA_FLAGS = ("anon", "redirect", "autopatrolled")


def change_from_json(data: Any) -> RecentChange:
    """Decode one feed/schema object (already parsed JSON) into a change."""
    if not isinstance(data, dict):
        raise DecodeError(RejectReason.BAD_JSON, "not a JSON object")
    get = data.get
    length = _pair(get("length"), "length")
    revision = _pair(get("revision"), "revision")
    wiki = coerce.wiki_id(get("wiki"))
    change_type = coerce.change_type(get("type"))
    user = coerce.req_str(get("user"), "user")
    anon = coerce.json_bool(get("anon"), "anon")
    change = RecentChange(
        wiki=wiki,
        type=change_type,
        ns=coerce.namespace(get("namespace"), "namespace"),
        title=coerce.req_str(get("title"), "title"),
        timestamp=coerce.unix_time(_required(data, "timestamp")),
        user=user,
        rcid=coerce.opt_int(get("id"), "id"),
        pageid=coerce.opt_int(get("pageid"), "pageid"),
        revid=coerce.opt_int(revision.get("new"), "revision.new"),
        old_revid=coerce.opt_int(revision.get("old"), "revision.old"),
        userid=coerce.opt_int(get("userid"), "userid"),
        oldlen=coerce.opt_int(length.get("old"), "length.old"),
        newlen=coerce.opt_int(length.get("new"), "length.new"),
        comment=coerce.opt_str(get("comment"), "comment") or "",
        parsedcomment=coerce.opt_str(get("parsedcomment"), "parsedcomment"),
        # The feed has no anon flag; MediaWiki shows anonymous editors by IP.
        anon=anon if anon is not None else coerce.is_ip_user(user),
        bot=bool(coerce.json_bool(get("bot"), "bot")),
        minor=bool(coerce.json_bool(get("minor"), "minor")),
        redirect=bool(coerce.json_bool(get("redirect"), "redirect")),
        patrolled=coerce.json_bool(get("patrolled"), "patrolled"),
        autopatrolled=bool(coerce.json_bool(get("autopatrolled"), "autopatrolled")),
        tags=coerce.str_list(get("tags"), "tags"),
        sha1=coerce.opt_str(get("sha1"), "sha1"),
        logid=coerce.opt_int(get("log_id"), "log_id"),
        logtype=coerce.opt_str(get("log_type"), "log_type"),
        logaction=coerce.opt_str(get("log_action"), "log_action"),
        logparams=get("log_params"),
        log_action_comment=coerce.opt_str(get("log_action_comment"), "log_action_comment"),
        server_url=coerce.opt_str(get("server_url"), "server_url"),
        server_name=coerce.opt_str(get("server_name"), "server_name"),
        server_script_path=coerce.opt_str(get("server_script_path"), "server_script_path"),
    )
    return coerce.checked(change)


def change_from_json_bytes(data: bytes | str) -> RecentChange:
    """Decode JSON text; duplicate keys and NaN/Infinity are refused (`BAD_JSON`)."""
    return change_from_json(coerce.strict_json(data))


def change_to_json(change: RecentChange, *, meta: bool = True) -> dict[str, Any]:
    """The schema-shaped object for a change (MediaWiki's key order)."""
    out: dict[str, Any] = {}
    if meta:
        out["$schema"] = SCHEMA_URI
        out["meta"] = {
            "uri": change.page_url,
            "id": change.stable_id,
            "dt": iso_from_utc(change.timestamp),
            "domain": change.server_name,
            "stream": STREAM,
        }
    out["id"] = change.rcid
    out["type"] = change.type
    out["namespace"] = change.ns
    out["title"] = change.title
    if meta:
        out["title_url"] = change.page_url
    out["comment"] = change.comment
    if change.parsedcomment is not None:
        out["parsedcomment"] = change.parsedcomment
    moment = change.timestamp
    out["timestamp"] = moment.timestamp() if moment.microsecond else int(moment.timestamp())
    out["user"] = change.user
    out["bot"] = change.bot
    if meta:
        out["notify_url"] = change.diff_url or change.page_url
    if not change.is_log or change.minor:
        out["minor"] = change.minor
    if change.patrolled is not None:
        out["patrolled"] = change.patrolled
    if not change.is_log or change.oldlen is not None or change.newlen is not None:
        out["length"] = {"old": change.oldlen, "new": change.newlen}
    if not change.is_log or change.revid is not None or change.old_revid is not None:
        out["revision"] = {"old": change.old_revid, "new": change.revid}
    # A log's fields; also any a decoder found on another type, or they would be lost.
    if change.is_log or _has_log_fields(change):
        out["log_id"] = change.logid
        out["log_type"] = change.logtype
        out["log_action"] = change.logaction
        out["log_params"] = change.logparams
        out["log_action_comment"] = change.log_action_comment
    out["server_url"] = change.server_url
    out["server_name"] = change.server_name
    out["server_script_path"] = change.server_script_path
    out["wiki"] = change.wiki
    for name in _EXTRA_INTS:
        if (value := getattr(change, name)) is not None:
            out[name] = value
    for name in _EXTRA_FLAGS:
        if getattr(change, name):
            out[name] = True
    if not change.anon and change.user_is_ip:
        out["anon"] = False  # say so, or the reader would infer anon from the IP
    if change.tags is not None:
        out["tags"] = list(change.tags)
    if change.sha1 is not None:
        out["sha1"] = change.sha1
    return out


def change_to_json_bytes(change: RecentChange, *, meta: bool = True) -> bytes:
    """`change_to_json` as UTF-8 JSON text."""
    return json.dumps(change_to_json(change, meta=meta), ensure_ascii=False).encode()


def _has_log_fields(change: RecentChange) -> bool:
    return not (
        change.logid is None
        and change.logtype is None
        and change.logaction is None
        and change.logparams is None
        and change.log_action_comment is None
    )


def _pair(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise coerce.bad(name, "not an object")
    return value


def _required(data: dict[str, Any], name: str) -> Any:
    if data.get(name) is None:
        raise coerce.missing(name)
    return data[name]
