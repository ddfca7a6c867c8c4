"""The effective config as TOML: every section, every key, defaults filled in.

`udp2xmpp check` prints it. The output reads back as a config
(`parse_config`) that means the same thing, except that secrets are shown
as ``"***"`` (whether they came from the file, a file it names, or the
environment) and keys that are not set appear as comments.

Walks the config dataclasses, so a key added to one shows up here without
an edit; the few places where the TOML is not the dataclass (``host:port``
strings, the routing tables) are translated explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

from .config import BridgeConfig

MASK = "***"
#: Field names whose values are never printed.
_SECRETS = frozenset({"password", "secret"})
#: Dotted keys holding (host, port) pairs, written as "host:port".
_HOSTPORTS = frozenset({"udp.listen", "http.listen", "xmpp.servers"})
#: ChangeFilter field -> its [[rooms.filtered]] key.
_FILTER_KEYS = {"wikis": "wiki", "types": "type", "namespaces": "ns", "users": "user"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def effective_toml(config: BridgeConfig) -> str:
    """The whole effective config, as TOML text."""
    out = _Writer()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            out.table(field.name, value)
    return out.text()


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def text(self) -> str:
        return "\n".join(self.lines).strip("\n") + "\n"

    def table(self, path: str, obj: Any, header: str | None = None) -> None:
        self.lines.extend(["", header or f"[{path}]"])
        later: list[tuple[str, Any]] = []
        for field in dataclasses.fields(obj):
            name, value = field.name, getattr(obj, field.name)
            dotted = f"{path}.{name}"
            if path == "rooms" and name == "routing":
                self.key("unknown_wikis", getattr(value, "unknown_wikis", None))
                self.key("all_room", getattr(value, "all_room", None))
                later.append(("routing", value))
            elif (
                path == "xmpp" and name in ("host", "port") and bool(getattr(obj, "servers", None))
            ):
                continue  # written as the first of `servers`
            elif name in _SECRETS or field.metadata.get("secret"):
                self.key(name, None if value is None else MASK, note="hidden")
            elif dotted in _HOSTPORTS:
                self.key(name, _hostports(value))
            elif dataclasses.is_dataclass(value) or _is_tables(value):
                later.append((dotted, value))
            else:
                self.key(name, value)
        for sub_path, value in later:
            if sub_path == "routing":
                self.routing(value)
            elif dataclasses.is_dataclass(value):
                self.table(sub_path, value)
            elif isinstance(value, Mapping):
                for key, item in value.items():
                    self.table(f"{sub_path}.{_key(str(key))}", item)
            else:
                for item in value:
                    self.table(sub_path, item, header=f"[[{sub_path}]]")

    def key(self, name: str, value: Any, note: str | None = None) -> None:
        if value is None:
            self.lines.append(f"# {_key(name)} = (not set)")
            return
        line = f"{_key(name)} = {_value(value)}"
        self.lines.append(f"{line}  # {note}" if note else line)

    def routing(self, routing: Any) -> None:
        """The routing tables go back to where they came from: [[rooms.filtered]], [wikis.*]."""
        for room in getattr(routing, "filtered", ()):
            self.lines.extend(["", "[[rooms.filtered]]"])
            self.key("room", room.room)
            self.key("room_title", room.title)
            for field in dataclasses.fields(room.filter):
                value = getattr(room.filter, field.name)
                if value is not None:
                    self.key(_FILTER_KEYS.get(field.name, field.name), value)
            for name in ("description", "members_only", "members"):
                self.key(name, getattr(room, name))
        for wiki, override in getattr(routing, "wikis", {}).items():
            self.table(f"wikis.{_key(wiki)}", override)


def _is_tables(value: Any) -> bool:
    if isinstance(value, Mapping):
        return bool(value) and all(dataclasses.is_dataclass(v) for v in value.values())
    if isinstance(value, tuple | list):
        return bool(value) and all(dataclasses.is_dataclass(v) for v in value)
    return False


def _hostports(value: Any) -> Any:
    if value is None:
        return None
    if not value:  # udp.listen = []: no UDP, another source feeds the bridge
        return []
    if isinstance(value[0], tuple | list):
        return [_hostport(host, port) for host, port in value]
    return _hostport(*value)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return _value(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value) if not math.isnan(value) else "nan"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, re.Pattern):
        return _string(value.pattern)
    if isinstance(value, frozenset | set):
        return "[" + ", ".join(_value(v) for v in sorted(value)) + "]"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    return _string(str(value))


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"} | {
    "\f": "\\f",
    "\r": "\\r",
}


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:  # cannot be encoded; never in a valid config
            out.append("\\ufffd")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
