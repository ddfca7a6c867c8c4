#!/usr/bin/env python3
"""A bot that reports large removals of content back into a room of its own.

    python examples/large_removals_bot.py --report-room removals@conference.example.org \\
        --threshold 500 enwiki@conference.example.org

It reads the wiki rooms with `RCClient`, and for every edit that removes at
least ``--threshold`` bytes posts one line into the report room (joined, and
created where the server allows, by the bot). A gap in a wiki room (the
archive could not fill a disconnection) is reported there too: readers of
the report know when it may be incomplete. The account comes from the
options, $RCCLIENT_JID / $RCCLIENT_PASSWORD, or ~/.config/rcclient.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rcclient import Gap, RCClient, RCClientError, RecentChange
from rcclient.config import ConfigError, account_from_arguments, add_account_arguments, parse_since


def report_line(change: RecentChange) -> str:
    removed = -(change.size_change or 0)
    link = change.diff_url or change.page_url or ""
    comment = f' ("{change.comment}")' if change.comment else ""
    return (
        f"Large removal on {change.wiki}: [[{change.title}]] -{removed} bytes "
        f"by {change.user}{comment} {link}"
    ).rstrip()


async def run(args: argparse.Namespace) -> None:
    account = account_from_arguments(args)
    client = RCClient(
        account.jid,
        account.password,
        args.rooms,
        host=account.host,
        port=account.port,
        ca_file=account.ca_file,
        nick=args.nick,
        since=parse_since(args.since) if args.since else None,
    )
    reported = 0

    @client.on_change(type="edit", max_change=-args.threshold)
    async def report(change: RecentChange) -> None:
        nonlocal reported
        await client.post(args.report_room, report_line(change))
        reported += 1
        print(f"reported [[{change.title}]] on {change.wiki}", flush=True)
        if args.count is not None and reported >= args.count:
            await client.close()  # run() returns

    @client.on_gap
    async def gap(event: Gap) -> None:
        await client.post(args.report_room, f"Reports may be incomplete: {event.reason}")

    async with client:
        print(f"# watching {', '.join(client.rooms)}; reporting in {args.report_room}", flush=True)
        await client.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rooms", nargs="+", help="wiki rooms to watch (room JIDs)")
    parser.add_argument("--report-room", required=True, help="room to post the reports in")
    parser.add_argument("--threshold", type=int, default=500, help="bytes removed (default 500)")
    parser.add_argument("--nick", default=None, help="the bot's nickname in the rooms")
    parser.add_argument("--since", help="also look at the archive since then (10m, 2h, ISO time)")
    parser.add_argument("--count", type=int, help="stop after this many reports")
    add_account_arguments(parser)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except (RCClientError, ConfigError, ValueError) as exc:
        print(f"large_removals_bot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
