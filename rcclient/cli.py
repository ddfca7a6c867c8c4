"""The ``rcclient`` command: ``rcclient tail ROOM...`` prints changes as they happen.

Only the bridge's messages are printed (``--publisher``, ``--publisher-jid``;
see `RCClient`), from moderated rooms unless ``--allow-unmoderated`` (then a
warning on stderr). ``--json`` lines name their room (a ``"room"`` key).

Errors are one line on stderr (``rcclient: no such room: x@conference...``):
exit status 1 when the server, the account or a room is the problem, 2 for
bad options or settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import click

from xmlrc.wire import RecentChange, change_to_json, change_to_line
from xmlrc.xmpp.muc import PUBLISHER_NICK
from xmlrc.xmpp.session import CLIENT_PORT

from .client import Gap, RCClient, RCClientError
from .config import Account, ConfigError, Trust, parse_since, resolve_account, resolve_trust
from .filters import ChangeFilter


@click.group()
def main() -> None:
    """Follow wiki recent changes published in XMPP rooms."""


@dataclass(frozen=True)
class _Output:
    as_json: bool
    colour: bool
    count: int | None


@main.command()
@click.argument("rooms", nargs=-1, required=True)
@click.option("--jid", help="Your account (or $RCCLIENT_JID, or the config file).")
@click.option("--password", help="Its password (or $RCCLIENT_PASSWORD, or the config file).")
@click.option("--host", help="Server to connect to (default: the JID's domain).")
@click.option("--port", type=int, help=f"Its client port (default {CLIENT_PORT}).")
@click.option("--ca-file", help="CA certificate (PEM) that signed the server's certificate.")
@click.option(
    "--config",
    "config_path",
    help="Config file (TOML, an [account] table); default ~/.config/rcclient.toml.",
)
@click.option("--nick", help="Nickname in the rooms (default: your name and a random suffix).")
@click.option(
    "--publisher",
    help="The bridge's nick in the rooms: only its changes are believed "
    f"(default {PUBLISHER_NICK}).",
)
@click.option(
    "--publisher-jid",
    help="The bridge's account; checked where a room shows its occupants' real JIDs.",
)
@click.option(
    "--allow-unmoderated",
    is_flag=True,
    help="Read rooms that are not moderated (with a warning) instead of refusing them.",
)
@click.option("--wiki", "wikis", multiple=True, help="Only this wiki ID (repeatable).")
@click.option("--type", "types", multiple=True, help="Only this type: edit, new, log...")
@click.option("--ns", "namespaces", type=int, multiple=True, help="Only this namespace number.")
@click.option("--no-bots", is_flag=True, help="Leave out bot changes.")
@click.option("--user", "users", multiple=True, help="Only changes by this user (repeatable).")
@click.option("--title-regex", help="Only titles this Python regular expression finds.")
@click.option("--min-change", type=int, help="Only size changes of at least this many bytes.")
@click.option(
    "--max-change", type=int, help="Only size changes of at most this (-500: removals of 500+)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object a line, in the EventStreams recentchange shape, with its room.",
)
@click.option(
    "--since",
    help="First replay the rooms' archives from this time: 10m, 2h, 1d or an ISO time.",
)
@click.option(
    "--resume",
    "state_file",
    type=click.Path(dir_okay=False),
    help="State file: continue after the last change a previous run printed.",
)
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many changes.")
@click.option("-v", "--verbose", count=True, help="Log what the client does (twice: XMPP too).")
def tail(
    rooms: tuple[str, ...],
    jid: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    ca_file: str | None,
    config_path: str | None,
    nick: str | None,
    publisher: str | None,
    publisher_jid: str | None,
    allow_unmoderated: bool,
    wikis: tuple[str, ...],
    types: tuple[str, ...],
    namespaces: tuple[int, ...],
    no_bots: bool,
    users: tuple[str, ...],
    title_regex: str | None,
    min_change: int | None,
    max_change: int | None,
    as_json: bool,
    since: str | None,
    state_file: str | None,
    count: int | None,
    verbose: int,
) -> None:
    """Print every change posted in ROOMS (room JIDs) until interrupted."""
    _setup_logging(verbose)
    try:
        account = resolve_account(
            jid=jid, password=password, host=host, port=port, ca_file=ca_file, config=config_path
        )
        trust = resolve_trust(
            publisher=publisher,
            publisher_jid=publisher_jid,
            allow_unmoderated=allow_unmoderated,
            config=config_path,
        )
        since_time = parse_since(since) if since else None
        where = _filter(
            wikis, types, namespaces, no_bots, users, title_regex, min_change, max_change
        )
    except (ConfigError, ValueError) as exc:
        _fail(str(exc), 2)
    colour = not as_json and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    output = _Output(as_json=as_json, colour=colour, count=count)
    options: dict[str, Any] = {
        "nick": nick,
        "since": since_time,
        "state_file": state_file,
        "trust": trust,
    }
    try:
        asyncio.run(_tail(account, rooms, where, output, options))
    except RCClientError as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # a bad room JID
        _fail(str(exc), 2)
    except BrokenPipeError:  # `rcclient tail | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"rcclient: {message}", err=True)
    sys.exit(status)


def _setup_logging(verbose: int) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "rcclient_cli", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rcclient: %(message)s"))
    handler.rcclient_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("rcclient").setLevel(logging.INFO if verbose else logging.WARNING)
    # slixmpp logs tracebacks for conditions we report in one line ourselves.
    logging.getLogger("slixmpp").setLevel(logging.DEBUG if verbose > 1 else logging.CRITICAL + 1)


def _filter(
    wikis: tuple[str, ...],
    types: tuple[str, ...],
    namespaces: tuple[int, ...],
    no_bots: bool,
    users: tuple[str, ...],
    title_regex: str | None,
    min_change: int | None,
    max_change: int | None,
) -> ChangeFilter:
    conditions: dict[str, Any] = {}
    if wikis:
        conditions["wiki"] = wikis
    if types:
        conditions["type"] = types
    if namespaces:
        conditions["ns"] = namespaces
    if no_bots:
        conditions["bot"] = False
    if users:
        conditions["user"] = users
    if title_regex is not None:
        conditions["title_regex"] = title_regex
    if min_change is not None:
        conditions["min_change"] = min_change
    if max_change is not None:
        conditions["max_change"] = max_change
    return ChangeFilter(**conditions)


async def _tail(
    account: Account,
    rooms: tuple[str, ...],
    where: ChangeFilter,
    output: _Output,
    options: dict[str, Any],
) -> None:
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    since: datetime | None = options["since"]
    trust: Trust = options["trust"]
    client = RCClient(
        account.jid,
        account.password,
        rooms,
        host=account.host,
        port=account.port,
        ca_file=account.ca_file,
        nick=options["nick"],
        since=since,
        state_file=options["state_file"],
        publisher=trust.publisher,
        publisher_jid=trust.publisher_jid,
        require_moderated=trust.require_moderated,
    )
    if not where.empty:
        client.register_filter(where)
    printed = 0
    async with client:
        # On stderr in every mode (stdout stays data), so scripts can wait for it.
        click.echo(f"# joined {', '.join(client.rooms)}", err=True)
        async for event in client.events():
            if isinstance(event, Gap):
                click.echo(f"rcclient: gap in {event.room}: {event.reason}", err=True)
                continue
            if output.as_json:
                data = change_to_json(event.change)
                data["room"] = event.room  # which room said it (EventStreams has no such key)
                line = json.dumps(data, ensure_ascii=False)
            else:
                line = _text_line(event.change, output.colour)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            printed += 1
            if output.count is not None and printed >= output.count:
                return


def _text_line(change: RecentChange, colour: bool) -> str:
    wiki = f"[{change.wiki}]"
    line = change_to_line(change)
    if not colour:
        return f"{wiki} {line}"
    delta = change.size_change
    tint = "yellow" if change.is_log else ("green" if (delta or 0) >= 0 else "red")
    return f"{click.style(wiki, fg='cyan')} {click.style(line, fg=tint)}"
