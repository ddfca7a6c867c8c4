#!/usr/bin/env python3
"""A researcher's recorder: changes to CSV or JSON lines, for hours, resuming after a restart.

    python examples/recorder.py --out changes.csv enwiki@conference.example.org dewiki@...
    python examples/recorder.py --out changes.jsonl --since 1h enwiki@conference.example.org

Appends one row (CSV) or one EventStreams-shaped object (``.jsonl``) per
change to ``--out``. The resume state goes next to it (``OUT.state.json``):
stop the recorder (Ctrl-C, SIGTERM) or let it crash, start it again with the
same options, and it continues with the first change it has not written yet
(fetched from the rooms' archives). The state is saved about once a second,
so after a crash the client may offer the last changes again: the recorder
reads the stable ids at the end of its file on start and skips those, so no
change is written twice. When an archive cannot cover a stop, the gap is
recorded in ``OUT.gaps.jsonl`` and reported on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rcclient import Delivery, Gap, RCClient, RCClientError
from rcclient.config import ConfigError, account_from_arguments, add_account_arguments, parse_since
from xmlrc.wire import change_to_json
from xmlrc.wire.model import iso_from_utc

COLUMNS = [
    "stable_id",
    "timestamp",
    "wiki",
    "type",
    "ns",
    "title",
    "user",
    "bot",
    "minor",
    "patrolled",
    "oldlen",
    "newlen",
    "size_change",
    "rcid",
    "revid",
    "old_revid",
    "logtype",
    "logaction",
    "comment",
    "room",
    "archive_id",
]


def csv_row(delivery: Delivery) -> list[Any]:
    change = delivery.change
    values: dict[str, Any] = change.as_dict()
    values |= {
        "stable_id": change.stable_id,
        "timestamp": iso_from_utc(change.timestamp),
        "size_change": change.size_change,
        "room": delivery.room,
        "archive_id": delivery.archive_id,
    }
    return ["" if values[name] is None else values[name] for name in COLUMNS]


class Sink:
    """The output file, opened for appending; every record is flushed at once."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.fmt = fmt
        new = not path.exists() or path.stat().st_size == 0
        self.handle: IO[str] = path.open("a", encoding="utf-8", newline="")
        self.writer = csv.writer(self.handle) if fmt == "csv" else None
        if self.writer is not None and new:
            self.writer.writerow(COLUMNS)

    def write(self, delivery: Delivery) -> None:
        if self.writer is not None:
            self.writer.writerow(csv_row(delivery))
        else:
            self.handle.write(json.dumps(change_to_json(delivery.change), ensure_ascii=False))
            self.handle.write("\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def written_ids(path: Path, fmt: str, tail_bytes: int = 1 << 20) -> set[str]:
    """The stable ids in the last `tail_bytes` of an existing output file."""
    if not path.exists():
        return set()
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - tail_bytes))
        lines = handle.read().decode("utf-8", errors="replace").splitlines()[1:]
    ids: set[str] = set()
    for line in lines:
        if fmt == "csv":
            first = next(csv.reader([line]), [""])
            ids.add(first[0] if first else "")
        else:
            try:
                ids.add(str(json.loads(line)["meta"]["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


def gap_record(gap: Gap) -> str:
    return json.dumps(
        {
            "room": gap.room,
            "last_seen_id": gap.last_seen_id,
            "last_seen_time": iso_from_utc(gap.last_seen_time) if gap.last_seen_time else None,
            "next_id": gap.next_id,
            "reason": gap.reason,
            "noticed": iso_from_utc(datetime.now(UTC).replace(microsecond=0)),
        }
    )


async def record(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = args.format or ("jsonl" if out.suffix in (".jsonl", ".json", ".ndjson") else "csv")
    state = Path(args.state) if args.state else out.with_name(out.name + ".state.json")
    gaps = out.with_name(out.name + ".gaps.jsonl")
    account = account_from_arguments(args)
    client = RCClient(
        account.jid,
        account.password,
        args.rooms,
        host=account.host,
        port=account.port,
        ca_file=account.ca_file,
        state_file=state,
        since=parse_since(args.since) if args.since else None,
    )
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    already = written_ids(out, fmt)  # written just before a crash
    sink = Sink(out, fmt)
    written = 0
    try:
        async with client:
            print(f"# recording {', '.join(client.rooms)} to {out} ({fmt})", file=sys.stderr)
            async for event in client.events():
                if isinstance(event, Gap):
                    print(f"recorder: gap in {event.room}: {event.reason}", file=sys.stderr)
                    with gaps.open("a", encoding="utf-8") as handle:
                        handle.write(gap_record(event) + "\n")
                    continue
                if event.change.stable_id in already:
                    continue
                sink.write(event)
                written += 1
                if args.count is not None and written >= args.count:
                    break
    except asyncio.CancelledError:  # SIGTERM: the client closed cleanly, state saved
        pass
    finally:
        sink.close()
    print(f"# {written} changes written", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rooms", nargs="+", help="rooms to record (room JIDs)")
    parser.add_argument("--out", required=True, help="output file (.csv, or .jsonl)")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="default: from --out")
    parser.add_argument("--state", help="resume state file (default: OUT.state.json)")
    parser.add_argument("--since", help="on the first run, start this far back (1h, ISO time)")
    parser.add_argument("--count", type=int, help="stop after this many changes")
    add_account_arguments(parser)
    args = parser.parse_args()
    try:
        return asyncio.run(record(args))
    except (RCClientError, ConfigError, ValueError) as exc:
        print(f"recorder: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
