#!/usr/bin/env python3
"""A live per-wiki activity summary: changes per wiki and type, refreshed every N seconds.

    python examples/activity_summary.py --interval 10 enwiki@conference.example.org dewiki@...

Counts since start and in the last interval, per wiki and change type, and
the bytes added and removed. ``--since 1h`` starts from the rooms' archives.
On a terminal the table is redrawn in place.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime

from rcclient import Gap, RCClient, RCClientError, RecentChange
from rcclient.config import ConfigError, account_from_arguments, add_account_arguments, parse_since

TYPES = ("edit", "new", "log", "categorize")


class Activity:
    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        self.recent: Counter[str] = Counter()
        self.by_type: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.added: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()
        self.gaps = 0

    def add(self, change: RecentChange) -> None:
        self.total[change.wiki] += 1
        self.recent[change.wiki] += 1
        self.by_type[change.wiki][change.type if change.type in TYPES else "other"] += 1
        delta = change.size_change or 0
        if delta > 0:
            self.added[change.wiki] += delta
        else:
            self.removed[change.wiki] -= delta

    def table(self, interval: float) -> str:
        now = datetime.now(UTC).strftime("%H:%M:%S")
        head = f"{'wiki':<16} {'total':>7} {f'last {interval:g}s':>9}"
        head += (
            "".join(f" {name:>10}" for name in (*TYPES, "other")) + f" {'+bytes':>9} {'-bytes':>9}"
        )
        lines = [f"activity at {now} UTC" + (f" ({self.gaps} gaps)" if self.gaps else ""), head]
        for wiki in sorted(self.total, key=lambda w: (-self.total[w], w)):
            counts = self.by_type[wiki]
            row = f"{wiki:<16} {self.total[wiki]:>7} {self.recent[wiki]:>9}"
            row += "".join(f" {counts[name]:>10}" for name in (*TYPES, "other"))
            row += f" {self.added[wiki]:>9} {self.removed[wiki]:>9}"
            lines.append(row)
        if not self.total:
            lines.append("(no changes yet)")
        return "\n".join(lines)


async def summarise(args: argparse.Namespace) -> None:
    account = account_from_arguments(args)
    client = RCClient(
        account.jid,
        account.password,
        args.rooms,
        host=account.host,
        port=account.port,
        ca_file=account.ca_file,
        since=parse_since(args.since) if args.since else None,
    )
    activity = Activity()

    @client.on_change
    def count(change: RecentChange) -> None:
        activity.add(change)

    @client.on_gap
    def gap(event: Gap) -> None:
        activity.gaps += 1
        print(f"activity_summary: gap in {event.room}: {event.reason}", file=sys.stderr)

    redraw = sys.stdout.isatty()
    async with client:
        reading = asyncio.create_task(client.run())
        try:
            for _round in range(args.rounds or sys.maxsize):
                await asyncio.sleep(args.interval)
                if redraw:
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(activity.table(args.interval), flush=True)
                activity.recent.clear()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rooms", nargs="+", help="rooms to watch (room JIDs)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between tables")
    parser.add_argument("--since", help="count from this far back first (10m, 1h, ISO time)")
    parser.add_argument("--rounds", type=int, help="stop after this many tables")
    add_account_arguments(parser)
    args = parser.parse_args()
    try:
        asyncio.run(summarise(args))
    except (RCClientError, ConfigError, ValueError) as exc:
        print(f"activity_summary: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
