"""Reading the routing part of the TOML config: ``[rooms]`` routing keys,
``[wikis.NAME]`` and ``[[rooms.filtered]]``.

Everything is checked and compiled here, once: a filtered room's conditions
(by `xmlrc.filters.parse`, whose errors name the key), member JIDs, room
names and rooms two things would share. A bad value raises
`RoutingConfigError` whose message starts with the key
(``rooms.filtered[2].title_regex: bad regex ...``); `udp2xmpp.config` turns it
into its `ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from slixmpp.jid import JID, InvalidJID

from xmlrc import filters
from xmlrc.wire.coerce import WIKI_ID

from .model import FilteredRoom, RoutingError, RoutingSettings, WikiOverride
from .router import Router

#: Keys of ``[rooms]`` this module reads (the others belong to `udp2xmpp.config`).
ROOMS_KEYS = frozenset({"unknown_wikis", "all_room", "filtered"})
WIKI_KEYS = frozenset(
    {"room", "title", "description", "server_url", "server_script_path"}
    | {"members_only", "members"}
)
#: A filtered room's conditions: every condition of the one engine (`xmlrc.filters`).
FILTER_KEYS = frozenset(filters.KEYS)
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
            f"{key}.title: ambiguous: title_regex and title_glob match page titles, "
            "room_title names the room"
        )
    _no_unknown(table, key, FILTERED_ROOM_KEYS)
    room = _opt_text(table, "room", f"{key}.room")
    if room is None:
        raise RoutingConfigError(f"{key}.room: required")
    try:
        change_filter = filters.parse({k: v for k, v in table.items() if k in FILTER_KEYS})
    except filters.FilterError as exc:
        raise RoutingConfigError(f"{key}.{exc}") from None
    if change_filter.is_empty:
        raise RoutingConfigError(
            f"{key}: no condition (give {', '.join(filters.KEYS)}; "
            "rooms.all_room takes every change)"
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
    listed = table.get("members", [])
    listed = listed if isinstance(listed, list) else [listed]
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


def _no_unknown(table: dict[str, Any], key: str, known: frozenset[str]) -> None:
    for name in table:
        if name not in known:
            raise RoutingConfigError(
                f"{key}.{name}: unknown key (known: {', '.join(sorted(known))})"
            )
