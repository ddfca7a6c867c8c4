"""The configuration of ``rc2udp poll``: a TOML file and/or command-line options.

Every key, with its default (commented in ``examples/rc2udp.toml``)::

    contact = "you@example.org"       # in the User-Agent (or user_agent = "full string")
    targets = ["127.0.0.1:9390"]      # bridges: every change goes to each of them
    format = "xmlrc"                  # datagram format: xmlrc | mw-json | mw-xml
    prefix = "rc"                     # optional line prefix (as udp://host:port/PREFIX)
    state_file = "rc2udp-state.json"  # resume points; relative to this file
    interval = 10                     # seconds between two polls of a wiki
    lookback = 10                     # seconds re-read each poll (late changes)
    maxlag = 5                        # database lag (s) at which the wiki is left alone
    since = "now"                     # start of a wiki without state: now, ISO time, 90m, 2h, 3d
    page_delay = 0.5                  # seconds between two continuation pages (0: none)
    max_pages = 1000                  # pages per round at most (the next round continues)
    max_response_bytes = 16777216     # larger answers are refused (16 MiB)
    max_redirects = 5                 # same-origin redirects followed (never another origin)

    [[wiki]]
    api = "https://en.wikipedia.org/w/api.php"
    login = "MyBot@rc2udp"            # optional bot password, for the patrol flags
    password_file = "/etc/rc2udp/enwiki.password"   # or password_env = "NAME"

A bad value raises `ConfigError` naming the key.  The defaults of the last
four are `rc2udp.limits.Limits`'s.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xmlrc.wire.datagram import BRIDGE_ADDRESS, BRIDGE_HOST, BRIDGE_PORT
from xmlrc.wire.model import utc_from_iso
from xmlrc_emitter import DatagramFormat

from .limits import MIN_RESPONSE_BYTES, Limits

DEFAULT_TARGET = BRIDGE_ADDRESS
_RELATIVE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_KEYS = {
    "contact",
    "user_agent",
    "targets",
    "format",
    "prefix",
    "state_file",
    "interval",
    "lookback",
    "maxlag",
    "since",
    "wiki",
    *(name for name in Limits.__dataclass_fields__ if name != "round_memory"),
}
_WIKI_KEYS = {"api", "login", "password_file", "password_env"}


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class Target:
    """A bridge address that datagrams are sent to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WikiConfig:
    """One wiki to poll: its API URL and, optionally, the bot login to use."""

    api: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PollConfig:
    """A whole validated rc2udp config: the wikis, the targets, the pace and the limits."""

    wikis: tuple[WikiConfig, ...]
    targets: tuple[Target, ...] = (Target(BRIDGE_HOST, BRIDGE_PORT),)
    format: DatagramFormat = DatagramFormat.XMLRC
    prefix: str | None = None
    state_file: Path | None = None
    interval: float = 10.0
    lookback: float = 10.0
    maxlag: int | None = 5
    since: str = "now"
    contact: str | None = None
    user_agent: str | None = None
    limits: Limits = field(default_factory=Limits)


def parse_target(text: str, key: str = "target") -> Target:
    """``HOST:PORT`` or ``[IPV6]:PORT``."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, not {text!r}")
    return Target(host, int(port))


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``now``, an ISO 8601 UTC time, or a duration before now (``90s``, ``2h``, ``3d``)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now.replace(microsecond=0)
    if match := _RELATIVE.fullmatch(text):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now - timedelta(seconds=seconds)).replace(microsecond=0)
    try:
        return utc_from_iso(text)
    except ValueError:
        raise ConfigError(
            f"since: expected now, an ISO 8601 UTC time or a duration like 2h, not {text!r}"
        ) from None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _number(data: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{key}: expected a number >= {minimum:g}, not {value!r}")
    return float(value)


def _integer(data: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, not {value!r}")
    return value


def _limits(data: Mapping[str, Any]) -> Limits:
    default = Limits()
    return Limits(
        max_response_bytes=_integer(
            data, "max_response_bytes", default.max_response_bytes, minimum=MIN_RESPONSE_BYTES
        ),
        max_redirects=_integer(data, "max_redirects", default.max_redirects, minimum=0),
        page_delay=_number(data, "page_delay", default.page_delay, minimum=0),
        max_pages=_integer(data, "max_pages", default.max_pages, minimum=1),
    )


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise ConfigError(f"{key}: expected a non-empty string")
    return value


def _password(entry: Mapping[str, Any], key: str, base_dir: Path) -> str | None:
    if "password_file" in entry and "password_env" in entry:
        raise ConfigError(f"{key}: give password_file or password_env, not both")
    if (name := entry.get("password_file")) is not None:
        path = base_dir / str(name)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}.password_file: cannot read {path}: {exc.strerror}") from None
    if (variable := entry.get("password_env")) is not None:
        value = os.environ.get(str(variable))
        if not value:
            raise ConfigError(f"{key}.password_env: the variable {variable} is not set")
        return value
    return None


def _wiki(entry: Any, key: str, base_dir: Path) -> WikiConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"{key}: expected a table")
    if unknown := set(entry) - _WIKI_KEYS:
        raise ConfigError(f"{key}: unknown key {sorted(unknown)[0]!r}")
    api = entry.get("api")
    if not isinstance(api, str) or urlsplit(api).scheme not in ("http", "https"):
        raise ConfigError(f"{key}.api: expected an http(s) URL of api.php")
    login = _text(entry, "login")
    password = _password(entry, key, base_dir)
    if login is not None and password is None:
        raise ConfigError(f"{key}: login needs password_file or password_env")
    return WikiConfig(api=api, login=login, password=password)


def build_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path = Path("."),
    apis: tuple[str, ...] = (),
    login: str | None = None,
    password: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PollConfig:
    """A checked `PollConfig` from TOML data plus command-line values.

    `apis` (repeated ``--api``) add wikis to the file's ``[[wiki]]`` list, with
    `login`/`password` if given; `overrides` (options given on the command
    line) replace the file's top-level values.
    """
    merged: dict[str, Any] = dict(data)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if unknown := set(merged) - _TOP_KEYS:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}")
    entries = merged.get("wiki", [])
    if not isinstance(entries, list):
        raise ConfigError("wiki: expected [[wiki]] tables")
    wikis = [_wiki(entry, f"wiki[{i}]", base_dir) for i, entry in enumerate(entries)]
    if login and not password:
        raise ConfigError("--login needs a password (--password-file or RC2UDP_PASSWORD)")
    for api in apis:
        if urlsplit(api).scheme not in ("http", "https"):
            raise ConfigError(f"--api: expected an http(s) URL of api.php, not {api!r}")
        wikis.append(WikiConfig(api=api, login=login, password=password))
    if not wikis:
        raise ConfigError("no wiki: give --api URL or [[wiki]] api = ... in --config")
    if len({w.api for w in wikis}) != len(wikis):
        raise ConfigError("wiki: the same api is listed twice")

    targets_value = merged.get("targets", [DEFAULT_TARGET])
    if isinstance(targets_value, str):
        targets_value = [targets_value]
    if not isinstance(targets_value, list | tuple) or not targets_value:
        raise ConfigError("targets: expected a list of HOST:PORT")
    targets = tuple(parse_target(str(t), "targets") for t in targets_value)

    try:
        fmt = DatagramFormat(merged.get("format", _default("format")))
    except ValueError:
        choices = ", ".join(f.value for f in DatagramFormat)
        raise ConfigError(f"format: expected one of {choices}") from None
    prefix = _text(merged, "prefix")
    if prefix is not None and (any(c.isspace() for c in prefix) or prefix[0] in "{<"):
        raise ConfigError("prefix: no spaces, and it may not start with { or <")

    state = merged.get("state_file")
    state_file = base_dir / str(state) if state is not None else None
    maxlag_value = merged.get("maxlag", _default("maxlag"))
    maxlag = (
        None
        if maxlag_value in (None, -1)
        else int(_number(merged, "maxlag", _default("maxlag"), minimum=0))
    )
    since = merged.get("since", _default("since"))
    parse_since(str(since))

    contact = _text(merged, "contact")
    user_agent = _text(merged, "user_agent")
    anonymous = contact is None and user_agent is None
    if anonymous and not all(is_loopback_url(w.api) for w in wikis):
        raise ConfigError(
            "contact: give --contact EMAIL_OR_URL (or --user-agent): Wikimedia's "
            "User-Agent policy asks every client for a way to reach its operator"
        )
    return PollConfig(
        wikis=tuple(wikis),
        targets=targets,
        format=fmt,
        prefix=prefix,
        state_file=state_file,
        interval=_number(merged, "interval", _default("interval"), minimum=0.05),
        lookback=_number(merged, "lookback", _default("lookback"), minimum=0),
        maxlag=maxlag,
        since=str(since),
        contact=contact,
        user_agent=user_agent,
        limits=_limits(merged),
    )


def _default(name: str) -> Any:
    """A `PollConfig` field's default, as the dataclass states it (the one place)."""
    return PollConfig.__dataclass_fields__[name].default
