"""The bridge's TOML configuration: reading, defaults and validation.

A bad value stops startup with a `ConfigError` that names the key
(``udp.listen: ...``). Secrets can come from the file, a file named in it,
or the environment, so the config itself can be world-readable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slixmpp.jid import JID, InvalidJID

from xmlrc_emitter.wire.coerce import WIKI_ID

PASSWORD_ENV = "UDP2XMPP_PASSWORD"  # noqa: S105 - a variable name, not a password


class ConfigError(ValueError):
    """A config value is missing or wrong; the message starts with the key."""


@dataclass(frozen=True, slots=True)
class XmppSettings:
    jid: str
    password: str
    host: str | None = None
    port: int = 5222
    ca_file: str | None = None
    #: Off only for throwaway servers on loopback; verification is the default.
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class UdpSettings:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 9390),)
    #: Kernel receive buffer to ask for; a burst waits there while we work.
    receive_buffer: int = 8 * 1024 * 1024
    max_datagram: int = 65507


@dataclass(frozen=True, slots=True)
class RoomSettings:
    service: str
    room: str = "{wiki}"
    nick: str = "rcbot"
    description: str = "Recent changes of {wiki}, from xmlrc"
    #: Wikis whose rooms are created and joined at startup, before their first change.
    wikis: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    #: Changes held per room while the server is away; past it the oldest are dropped.
    queue_size: int = 100_000


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    xmpp: XmppSettings
    udp: UdpSettings
    rooms: RoomSettings
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    source: str = "<memory>"


def load_config(path: str | os.PathLike[str]) -> BridgeConfig:
    """Read and validate a config file."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file}: not valid TOML: {exc}") from None
    return parse_config(data, base_dir=file.parent, source=str(file))


def parse_config(
    data: dict[str, Any], *, base_dir: Path = Path("."), source: str = "<memory>"
) -> BridgeConfig:
    reader = _Reader(data)
    known = {"xmpp", "udp", "rooms", "delivery"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(sorted(known))})")
    xmpp = reader.section("xmpp")
    jid_text = reader.text(xmpp, "xmpp.jid")
    try:
        jid = JID(jid_text)
    except InvalidJID as exc:
        raise ConfigError(f"xmpp.jid: not a valid JID: {exc}") from None
    if not jid.user:
        raise ConfigError("xmpp.jid: needs a user part (user@domain)")
    ca_file = reader.opt_text(xmpp, "xmpp.ca_file")
    if ca_file is not None:
        ca_path = (base_dir / ca_file).resolve()
        if not ca_path.is_file():
            raise ConfigError(f"xmpp.ca_file: no such file: {ca_path}")
        ca_file = str(ca_path)
    xmpp_settings = XmppSettings(
        jid=str(jid),
        password=_password(reader, xmpp, base_dir),
        host=reader.opt_text(xmpp, "xmpp.host"),
        port=reader.port(xmpp, "xmpp.port", 5222),
        ca_file=ca_file,
        verify_tls=reader.flag(xmpp, "xmpp.verify_tls", True),
    )
    reader.no_unknown(
        xmpp,
        "xmpp",
        {"jid", "password", "password_file", "password_env", "host", "port"}
        | {"ca_file", "verify_tls"},
    )

    udp = reader.section("udp", required=False)
    listen_value = udp.get("listen", "127.0.0.1:9390")
    listens = listen_value if isinstance(listen_value, list) else [listen_value]
    if not listens:
        raise ConfigError("udp.listen: needs at least one address")
    udp_settings = UdpSettings(
        listen=tuple(parse_hostport(item, "udp.listen") for item in listens),
        receive_buffer=reader.integer(udp, "udp.receive_buffer", 8 * 1024 * 1024, low=65536),
        max_datagram=reader.integer(udp, "udp.max_datagram", 65507, low=512, high=65507),
    )
    reader.no_unknown(udp, "udp", {"listen", "receive_buffer", "max_datagram"})

    rooms = reader.section("rooms")
    template = reader.opt_text(rooms, "rooms.room") or "{wiki}"
    if "{wiki}" not in template:
        raise ConfigError("rooms.room: the template must contain {wiki}")
    try:
        template.format(wiki="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"rooms.room: bad template: {exc}") from None
    service = reader.text(rooms, "rooms.service")
    if "@" in service or "/" in service:
        raise ConfigError("rooms.service: a MUC service domain, like conference.example.org")
    room_settings = RoomSettings(
        service=service,
        room=template,
        nick=reader.opt_text(rooms, "rooms.nick") or "rcbot",
        description=reader.opt_text(rooms, "rooms.description")
        or "Recent changes of {wiki}, from xmlrc",
        wikis=_wiki_list(rooms.get("wikis", []), "rooms.wikis"),
    )
    reader.no_unknown(rooms, "rooms", {"service", "room", "nick", "description", "wikis"})

    delivery = reader.section("delivery", required=False)
    delivery_settings = DeliverySettings(
        queue_size=reader.integer(delivery, "delivery.queue_size", 100_000, low=1)
    )
    reader.no_unknown(delivery, "delivery", {"queue_size"})
    return BridgeConfig(
        xmpp=xmpp_settings,
        udp=udp_settings,
        rooms=room_settings,
        delivery=delivery_settings,
        source=source,
    )


def parse_hostport(value: Any, key: str) -> tuple[str, int]:
    """``"127.0.0.1:9390"`` or ``"[::1]:9390"`` to (host, port)."""
    if not isinstance(value, str):
        raise ConfigError(f'{key}: expected "host:port", got {value!r}')
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f'{key}: expected "host:port", got {value!r}')
    host = host.removeprefix("[").removesuffix("]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: bad port in {value!r}")
    return host, int(port_text)


def _wiki_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: must be a list of wiki IDs")
    for item in value:
        if not WIKI_ID.fullmatch(item):
            raise ConfigError(f"{key}: {item!r} is not a valid wiki ID")
    return tuple(value)


def _password(reader: _Reader, xmpp: dict[str, Any], base_dir: Path) -> str:
    given = [k for k in ("password", "password_file", "password_env") if k in xmpp]
    if len(given) > 1:
        raise ConfigError(
            f"xmpp.{given[1]}: give only one of password, password_file, password_env"
        )
    if "password" in xmpp:
        return reader.text(xmpp, "xmpp.password")
    if "password_file" in xmpp:
        path = base_dir / reader.text(xmpp, "xmpp.password_file")
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"xmpp.password_file: {path}: {exc.strerror}") from None
    env_name = reader.opt_text(xmpp, "xmpp.password_env") or PASSWORD_ENV
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(
            f"xmpp.password: not set (give password, password_file, or the {env_name} variable)"
        )
    return value


class _Reader:
    """Typed access to TOML tables, with errors that name the key."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def section(self, name: str, *, required: bool = True) -> dict[str, Any]:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigError(f"{name}: missing section [{name}]")
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: must be a table [{name}]")
        return value

    def text(self, table: dict[str, Any], key: str) -> str:
        value = self.opt_text(table, key)
        if not value:
            raise ConfigError(f"{key}: required")
        return value

    def opt_text(self, table: dict[str, Any], key: str) -> str | None:
        value = table.get(key.rsplit(".", 1)[-1])
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value

    def integer(
        self, table: dict[str, Any], key: str, default: int, *, low: int = 0, high: int = 2**62
    ) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
        return value

    def port(self, table: dict[str, Any], key: str, default: int) -> int:
        return self.integer(table, key, default, low=1, high=65535)

    def flag(self, table: dict[str, Any], key: str, default: bool) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value

    def no_unknown(self, table: dict[str, Any], section: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown key")
