"""Reading the routing part of the TOML config: ``[rooms]`` routing keys,
``[wikis.NAME]`` and ``[[rooms.filtered]]``.

Everything is checked and compiled here, once: regexes, value lists, bounds,
member JIDs, room names and rooms two things would share. A bad value raises
`RoutingConfigError` whose message starts with the key
(``rooms.filtered[2].title_regex: bad regex ...``); `udp2xmpp.config` turns it
into its `ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from slixmpp.jid import JID, InvalidJID

from xmlrc.wire.coerce import WIKI_ID
from xmlrc.wire.model import CHANGE_TYPES

from .model import ChangeFilter, FilteredRoom, RoutingError, RoutingSettings, WikiOverride
from .router import Router

#: Keys of ``[rooms]`` this module reads (the others belong to `udp2xmpp.config`).
ROOMS_KEYS = frozenset({"unknown_wikis", "all_room", "filtered"})
WIKI_KEYS = frozenset(
    {"room", "title", "description", "server_url", "server_script_path"}
    | {"members_only", "members"}
)
FILTER_KEYS = frozenset({"wiki", "type", "ns", "bot", "minor", "user", "title_regex"}) | {
    "min_change",
    "max_change",
}
FILTERED_ROOM_KEYS = FILTER_KEYS | {"room", "room_title", "description", "members_only", "members"}


class RoutingConfigError(ValueError):
    """A routing value is wrong; the message starts with the key."""


def parse_routing(
    rooms: dict[str, Any],
    wikis: Any,
    *,
    service: str,
    template: str,
    description: str,
    known_wikis: Iterable[str] = (),
) -> RoutingSettings:
    """The `RoutingSettings` of a config's ``[rooms]`` table and ``[wikis]`` tables.

    Also builds a `Router` from them, so what only shows when the rooms are put
    together (two things sharing a room) fails here, at load, too.
    """
    unknown = rooms.get("unknown_wikis", "create")
    if unknown not in ("create", "drop"):
        raise RoutingConfigError(
            f'rooms.unknown_wikis: must be "create" or "drop", got {unknown!r}'
        )
    all_room = _opt_text(rooms, "all_room", "rooms.all_room")

    if wikis is None:
        wikis = {}
    if not isinstance(wikis, dict):
        raise RoutingConfigError("wikis: must be tables, one per wiki: [wikis.enwiki]")
    overrides: dict[str, WikiOverride] = {}
    for wiki, table in wikis.items():
        key = f"wikis.{wiki}"
        if not WIKI_ID.fullmatch(wiki):
            raise RoutingConfigError(f"{key}: {wiki!r} is not a valid wiki ID")
        if not isinstance(table, dict):
            raise RoutingConfigError(f"{key}: must be a table [{key}]")
        overrides[wiki] = _wiki_override(table, key)

    filtered_value = rooms.get("filtered", [])
    if not isinstance(filtered_value, list):
        raise RoutingConfigError("rooms.filtered: must be an array of tables [[rooms.filtered]]")
    filtered: list[FilteredRoom] = []
    for index, table in enumerate(filtered_value):
        key = f"rooms.filtered[{index}]"
        if not isinstance(table, dict):
            raise RoutingConfigError(f"{key}: must be a table [[rooms.filtered]]")
        filtered.append(_filtered_room(table, key))

    settings = RoutingSettings(
        unknown_wikis="drop" if unknown == "drop" else "create",
        all_room=all_room,
        wikis=overrides,
        filtered=tuple(filtered),
    )
    try:
        Router(service, template, description, known_wikis=known_wikis, routing=settings)
    except RoutingError as exc:
        raise RoutingConfigError(str(exc)) from None
    return settings


def _wiki_override(table: dict[str, Any], key: str) -> WikiOverride:
    _no_unknown(table, key, WIKI_KEYS)
    server_url = _opt_text(table, "server_url", f"{key}.server_url")
    if server_url is not None and not re.fullmatch(r"https?://[^/\s?#]+", server_url):
        raise RoutingConfigError(
            f'{key}.server_url: the wiki\'s $wgServer, like "https://en.wikipedia.org" '
            f"(no path), got {server_url!r}"
        )
    script_path = table.get("server_script_path")
    if script_path is not None and (
        not isinstance(script_path, str) or not re.fullmatch(r"(/[^\s?#]*)?", script_path)
    ):
        raise RoutingConfigError(
            f'{key}.server_script_path: the wiki\'s $wgScriptPath, like "/w" or "", '
            f"got {script_path!r}"
        )
    members_only, members = _membership(table, key)
    return WikiOverride(
        room=_opt_text(table, "room", f"{key}.room"),
        title=_opt_text(table, "title", f"{key}.title"),
        description=_opt_text(table, "description", f"{key}.description"),
        server_url=server_url,
        server_script_path=script_path,
        members_only=members_only,
        members=members,
    )


def _filtered_room(table: dict[str, Any], key: str) -> FilteredRoom:
    if "title" in table:
        raise RoutingConfigError(
            f"{key}.title: ambiguous: title_regex matches page titles, room_title names the room"
        )
    _no_unknown(table, key, FILTERED_ROOM_KEYS)
    room = _opt_text(table, "room", f"{key}.room")
    if room is None:
        raise RoutingConfigError(f"{key}.room: required")
    wikis = _strings(table, "wiki", key)
    for wiki in wikis or ():
        if not WIKI_ID.fullmatch(wiki):
            raise RoutingConfigError(f"{key}.wiki: {wiki!r} is not a valid wiki ID")
    types = _strings(table, "type", key)
    for kind in types or ():
        if kind not in CHANGE_TYPES:
            raise RoutingConfigError(
                f"{key}.type: {kind!r} is not a change type ({', '.join(sorted(CHANGE_TYPES))})"
            )
    namespaces = _values(table, "ns", key)
    for ns in namespaces or ():
        if isinstance(ns, bool) or not isinstance(ns, int):
            raise RoutingConfigError(f"{key}.ns: namespace numbers, got {ns!r}")
    title_regex = None
    pattern = _opt_text(table, "title_regex", f"{key}.title_regex")
    if pattern is not None:
        try:
            title_regex = re.compile(pattern)
        except re.error as exc:
            raise RoutingConfigError(f"{key}.title_regex: bad regex {pattern!r}: {exc}") from None
    min_change = _opt_int(table, "min_change", f"{key}.min_change")
    max_change = _opt_int(table, "max_change", f"{key}.max_change")
    if min_change is not None and max_change is not None and min_change > max_change:
        raise RoutingConfigError(
            f"{key}.max_change: {max_change} is below min_change {min_change}; nothing would match"
        )
    change_filter = ChangeFilter(
        wikis=wikis,
        types=types,
        namespaces=frozenset(namespaces) if namespaces is not None else None,
        bot=_opt_flag(table, "bot", f"{key}.bot"),
        minor=_opt_flag(table, "minor", f"{key}.minor"),
        users=_strings(table, "user", key),
        title_regex=title_regex,
        min_change=min_change,
        max_change=max_change,
    )
    if change_filter.is_empty:
        raise RoutingConfigError(
            f"{key}: no condition (give wiki, type, ns, bot, minor, user, title_regex, "
            "min_change or max_change; rooms.all_room takes every change)"
        )
    members_only, members = _membership(table, key)
    return FilteredRoom(
        room=room,
        filter=change_filter,
        title=_opt_text(table, "room_title", f"{key}.room_title"),
        description=_opt_text(table, "description", f"{key}.description"),
        members_only=members_only,
        members=members,
    )


def _membership(table: dict[str, Any], key: str) -> tuple[bool, tuple[str, ...]]:
    members_only = _opt_flag(table, "members_only", f"{key}.members_only") or False
    listed = _values(table, "members", key) or []
    if listed and not members_only:
        raise RoutingConfigError(f"{key}.members: only for a room with members_only = true")
    members: list[str] = []
    for item in listed:
        try:
            jid = JID(item) if isinstance(item, str) else None
        except InvalidJID:
            jid = None
        if jid is None or not jid.user or jid.resource:
            raise RoutingConfigError(f"{key}.members: {item!r} is not a bare JID (user@domain)")
        members.append(str(jid.bare))
    return members_only, tuple(dict.fromkeys(members))


def _values(table: dict[str, Any], name: str, key: str) -> list[Any] | None:
    """A value or a list of values; None when absent. An empty list is refused."""
    if name not in table:
        return None
    value = table[name]
    values = value if isinstance(value, list) else [value]
    if not values and name != "members":
        raise RoutingConfigError(f"{key}.{name}: an empty list would match nothing")
    return values


def _strings(table: dict[str, Any], name: str, key: str) -> frozenset[str] | None:
    values = _values(table, name, key)
    if values is None:
        return None
    for value in values:
        if not isinstance(value, str) or not value:
            raise RoutingConfigError(f"{key}.{name}: must be a string or a list of strings")
    return frozenset(values)


def _opt_text(table: dict[str, Any], name: str, key: str) -> str | None:
    value = table.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise RoutingConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value


def _opt_flag(table: dict[str, Any], name: str, key: str) -> bool | None:
    value = table.get(name)
    if value is not None and not isinstance(value, bool):
        raise RoutingConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _opt_int(table: dict[str, Any], name: str, key: str) -> int | None:
    value = table.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise RoutingConfigError(f"{key}: must be an integer (bytes), got {value!r}")
    return value


def _no_unknown(table: dict[str, Any], key: str, known: frozenset[str]) -> None:
    for name in table:
        if name not in known:
            raise RoutingConfigError(
                f"{key}.{name}: unknown key (known: {', '.join(sorted(known))})"
            )
