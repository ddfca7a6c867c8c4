"""Account settings from flags, the environment and a TOML file; ``--since`` values.

The config file (``--config PATH``, ``$RCCLIENT_CONFIG``, or else
``$XDG_CONFIG_HOME/rcclient.toml``, by default ``~/.config/rcclient.toml``,
used when it exists)::

    [account]
    jid = "bot@example.org"
    password = "..."            # or password_file = "/path/to/file"
    host = "xmpp.example.org"   # optional, default: the JID's domain
    port = 5222                 # optional
    servers = ["10.0.0.3:5222"] # optional: other nodes of a cluster, tried in turn
    ca_file = "ca.pem"          # optional, relative to the config file

    [trust]                     # optional: who may speak for the rooms
    publisher = "rcbot"         # the bridge's nick in its rooms (the default)
    publisher_jid = "bridge@example.org"  # optional; checked where rooms show real JIDs
    # or, for a bridge pair (two accounts): ["rcbot@example.org", "rcbot2@example.org"]
    require_moderated = true    # refuse rooms that are not moderated (the default)

A flag beats the environment (``RCCLIENT_JID``, ``RCCLIENT_PASSWORD``,
``RCCLIENT_HOST``, ``RCCLIENT_PORT``, ``RCCLIENT_CA_FILE``), which beats the
file (``--server``, repeatable, replaces the file's ``servers``). For
``[trust]``, a flag (``--publisher``, ``--publisher-jid``,
``--allow-unmoderated``) beats the file; ``--publisher-jid`` may be given more
than once, as ``publisher_jid`` may be a list.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from xmlrc.xmpp.muc import PUBLISHER_NICK
from xmlrc.xmpp.session import CLIENT_PORT, split_hostport

from .trust import publisher_jids

__all__ = [
    "Account",
    "ConfigError",
    "Trust",
    "account_from_arguments",
    "add_account_arguments",
    "default_config_path",
    "parse_since",
    "resolve_account",
    "resolve_trust",
]

ENV_PREFIX = "RCCLIENT_"


class ConfigError(Exception):
    """Settings are missing or wrong; the message says which."""


@dataclass(frozen=True, slots=True)
class Account:
    """The XMPP account the client logs in with, and where its server is."""

    jid: str
    password: str
    host: str | None = None
    port: int = CLIENT_PORT
    #: Further nodes of the same service (a cluster), tried in turn: (host, port).
    servers: tuple[tuple[str, int], ...] = ()
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class Trust:
    """Whom to believe in the rooms: `RCClient`'s ``publisher``, ``publisher_jid``
    (here ``publisher_jids``: the publisher's accounts, none, one, or a bridge
    pair's two) and ``require_moderated``."""

    publisher: str = PUBLISHER_NICK
    publisher_jids: tuple[str, ...] = ()
    require_moderated: bool = True


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rcclient.toml"


def _read_toml(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file not found: {path}") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _config_path(
    config: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path, bool]:
    """The config file to read, and whether it was named (then it must exist)."""
    explicit = config is not None or bool(env.get(f"{ENV_PREFIX}CONFIG"))
    path = Path(config or env.get(f"{ENV_PREFIX}CONFIG") or default_config_path(env))
    return path.expanduser(), explicit


def _jids(values: Iterable[Any]) -> bool:
    """Whether `values` are all JIDs (non-empty strings) by `publisher_jids`' rule."""
    try:
        return all(isinstance(value, str) and publisher_jids([value]) for value in values)
    except (TypeError, ValueError):
        return False


def _load_trust(path: Path, explicit: bool) -> dict[str, Any]:
    data = _read_toml(path, explicit)
    trust = data.get("trust", {})
    if not isinstance(trust, dict):
        raise ConfigError(f"{path}: [trust] must be a table")
    unknown = sorted(set(trust) - {"publisher", "publisher_jid", "require_moderated"})
    if unknown:
        raise ConfigError(f"{path}: unknown key trust.{unknown[0]}")
    if "publisher" in trust and (not isinstance(trust["publisher"], str) or not trust["publisher"]):
        raise ConfigError(f"{path}: trust.publisher must be a non-empty string")
    if "publisher_jid" in trust:
        jids = trust["publisher_jid"]
        listed = jids if isinstance(jids, list) else [jids]
        if not listed or not _jids(listed):
            raise ConfigError(
                f"{path}: trust.publisher_jid must be a non-empty string "
                "or a list of non-empty strings"
            )
        trust = {**trust, "publisher_jid": tuple(listed)}
    if "require_moderated" in trust and not isinstance(trust["require_moderated"], bool):
        raise ConfigError(f"{path}: trust.require_moderated must be true or false")
    return dict(trust)


def resolve_trust(
    *,
    publisher: str | None = None,
    publisher_jid: str | Iterable[str] | None = None,
    allow_unmoderated: bool = False,
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Trust:
    """Whom to believe, from flags (the arguments) and the config file's ``[trust]``.

    ``publisher_jid`` is one JID or several (``--publisher-jid``, repeatable); given,
    it replaces the file's ``publisher_jid`` (a string or a list)."""
    env = os.environ if environ is None else environ
    file = _load_trust(*_config_path(config, env))
    if publisher is not None and not publisher:
        raise ConfigError("--publisher: give the bridge's nick in its rooms")
    flags = (publisher_jid,) if isinstance(publisher_jid, str) else tuple(publisher_jid or ())
    if not _jids(flags):
        raise ConfigError("--publisher-jid: give the bridge's account (a bare JID)")
    defaults = Trust()
    required = file.get("require_moderated", defaults.require_moderated)
    require = bool(required) and not allow_unmoderated
    return Trust(
        publisher=publisher or file.get("publisher") or defaults.publisher,
        publisher_jids=tuple(dict.fromkeys(flags or file.get("publisher_jid", ()))),
        require_moderated=require,
    )


def _load_file(path: Path, explicit: bool) -> dict[str, Any]:
    data = _read_toml(path, explicit)
    account = data.get("account", {})
    if not isinstance(account, dict):
        raise ConfigError(f"{path}: [account] must be a table")
    known = {"jid", "password", "password_file", "host", "port", "ca_file", "servers"}
    unknown = sorted(set(account) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key account.{unknown[0]}")
    for key in ("jid", "password", "password_file", "host", "ca_file"):
        if key in account and not isinstance(account[key], str):
            raise ConfigError(f"{path}: account.{key} must be a string")
    if "port" in account and (
        isinstance(account["port"], bool) or not isinstance(account["port"], int)
    ):
        raise ConfigError(f"{path}: account.port must be a number")
    servers = account.get("servers", [])
    if not isinstance(servers, list) or not all(isinstance(v, str) for v in servers):
        raise ConfigError(f'{path}: account.servers must be a list of "host:port"')
    out = dict(account)
    for key in ("password_file", "ca_file"):
        if key in out:
            out[key] = str((path.parent / out[key]).expanduser())
    return out


def resolve_account(
    *,
    jid: str | None = None,
    password: str | None = None,
    host: str | None = None,
    port: int | None = None,
    ca_file: str | None = None,
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    servers: Iterable[str] = (),
) -> Account:
    """The account from flags (the arguments), the environment and the config file.

    ``servers`` (``--server``, "host:port" each) replace the file's ``servers``."""
    env = os.environ if environ is None else environ
    path, explicit = _config_path(config, env)
    file = _load_file(path, explicit)

    def pick(flag: Any, name: str) -> Any:
        if flag is not None:
            return flag
        value = env.get(f"{ENV_PREFIX}{name.upper()}")
        if value:
            return value
        return file.get(name)

    jid = pick(jid, "jid")
    password = pick(password, "password")
    if password is None and file.get("password_file"):
        try:
            password = Path(file["password_file"]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read password file {file['password_file']}: {exc.strerror}"
            ) from None
    if not jid:
        raise ConfigError(f"no account: give --jid, set {ENV_PREFIX}JID or add jid to {path}")
    if password is None:
        raise ConfigError(
            f"no password for {jid}: give --password, set {ENV_PREFIX}PASSWORD "
            f"or add password to {path}"
        )
    raw_port = pick(port, "port")
    try:
        port_number = int(raw_port) if raw_port is not None else CLIENT_PORT
    except ValueError:
        raise ConfigError(f"bad port: {raw_port!r}") from None
    if not 0 < port_number < 65536:
        raise ConfigError(f"bad port: {port_number}")
    ca = pick(ca_file, "ca_file")
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"CA file not found: {ca}")
    flagged = tuple(servers)
    try:
        nodes = tuple(split_hostport(text) for text in flagged or file.get("servers", ()))
    except ValueError as exc:
        key = "--server" if flagged else f"{path}: account.servers"
        raise ConfigError(f"{key}: {exc}") from None
    return Account(
        jid=str(jid),
        password=str(password),
        host=pick(host, "host"),
        port=port_number,
        servers=nodes,
        ca_file=ca,
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration before now (``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``)
    or an ISO 8601 time (``2026-01-02T03:04:05Z``; without an offset, UTC)."""
    value = text.strip()
    moment = now or datetime.now(UTC)
    if value and _DURATION.sub("", value.replace(" ", "")) == "":
        seconds = sum(
            float(amount) * _UNITS[unit]
            for amount, unit in _DURATION.findall(value.replace(" ", ""))
        )
        return moment - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ConfigError(
            f"--since: expected a duration (10m, 2h, 1d) or an ISO time, not {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def add_account_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--jid --password --host --port --server --ca-file --config`` to a script's
    parser."""
    group = parser.add_argument_group("account (else $RCCLIENT_*, else the config file)")
    group.add_argument("--jid", help="your XMPP account")
    group.add_argument("--password", help="its password")
    group.add_argument("--host", help="server to connect to (default: the JID's domain)")
    group.add_argument("--port", type=int, help=f"its client port (default {CLIENT_PORT})")
    group.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another node of the same service (repeatable), tried in turn",
    )
    group.add_argument("--ca-file", help="CA certificate (PEM) of the server")
    group.add_argument("--config", help="config file (default ~/.config/rcclient.toml)")


def account_from_arguments(args: argparse.Namespace) -> Account:
    """The account from what `add_account_arguments` parsed, the environment and the file."""
    return resolve_account(
        jid=args.jid,
        password=args.password,
        host=args.host,
        port=args.port,
        ca_file=args.ca_file,
        config=args.config,
        servers=args.server,
    )
