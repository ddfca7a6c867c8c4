"""The ``rcclient`` command: ``rcclient tail ROOM...`` prints changes as they happen."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click

from xmlrc_emitter.wire import RecentChange, change_to_json, change_to_line

from .client import RCClient, RCClientError


@click.group()
def main() -> None:
    """Follow wiki recent changes published in XMPP rooms."""


@main.command()
@click.argument("rooms", nargs=-1, required=True)
@click.option(
    "--jid", envvar="RCCLIENT_JID", required=True, help="Your account (or $RCCLIENT_JID)."
)
@click.option(
    "--password",
    envvar="RCCLIENT_PASSWORD",
    required=True,
    help="Its password (or $RCCLIENT_PASSWORD).",
)
@click.option("--host", help="Server to connect to (default: the JID's domain).")
@click.option("--port", type=int, default=5222, show_default=True)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate that signed the server's certificate.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object a line, in the EventStreams recentchange shape.",
)
@click.option("--count", type=int, default=None, help="Exit after this many changes.")
def tail(
    rooms: tuple[str, ...],
    jid: str,
    password: str,
    host: str | None,
    port: int,
    ca_file: str | None,
    as_json: bool,
    count: int | None,
) -> None:
    """Print every change posted in ROOMS (room JIDs) until interrupted."""
    try:
        asyncio.run(_tail(rooms, jid, password, host, port, ca_file, as_json, count))
    except RCClientError as exc:
        click.echo(f"rcclient: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


async def _tail(
    rooms: tuple[str, ...],
    jid: str,
    password: str,
    host: str | None,
    port: int,
    ca_file: str | None,
    as_json: bool,
    count: int | None,
) -> None:
    printed = 0
    colour = not as_json and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    async with RCClient(jid, password, rooms, host=host, port=port, ca_file=ca_file) as client:
        click.echo(f"# joined {', '.join(rooms)}", err=True)  # stderr: stdout stays data
        async for delivery in client.deliveries():
            change = delivery.change
            if as_json:
                line = json.dumps(change_to_json(change), ensure_ascii=False)
            else:
                line = _text_line(change, delivery.room, colour)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            printed += 1
            if count is not None and printed >= count:
                return


def _text_line(change: RecentChange, room: str, colour: bool) -> str:
    wiki = f"[{change.wiki}]"
    line = change_to_line(change)
    if not colour:
        return f"{wiki} {line}"
    delta = change.size_change
    tint = "yellow" if change.is_log else ("green" if (delta or 0) >= 0 else "red")
    return f"{click.style(wiki, fg='cyan')} {click.style(line, fg=tint)}"
