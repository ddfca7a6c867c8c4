"""Replay recorded changes (JSON lines) as datagrams, at a chosen speed.

Pure helpers here (reading, renumbering); `rc2udp.cli` does the sending.
Renumbering lets a replay loop forever without repeating a stable id, so
clients that drop duplicates still show every round.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from xmlrc.wire import RecentChange, change_from_json

_ID_FIELDS = ("rcid", "revid", "old_revid", "logid")


def read_changes(path: str | Path) -> list[RecentChange]:
    """Changes from a JSON-lines file (recentchange-schema objects, one a line)."""
    changes = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    changes.append(change_from_json(json.loads(line)))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
    return changes


def id_span(changes: list[RecentChange]) -> int:
    """One more than the largest id in `changes`: the offset between two rounds."""
    return 1 + max(
        (value for c in changes for name in _ID_FIELDS if (value := getattr(c, name)) is not None),
        default=0,
    )


def renumber(change: RecentChange, offset: int, now: datetime | None = None) -> RecentChange:
    """`change` with its ids moved up by `offset` and, if given, the time set to `now`."""
    updates: dict[str, object] = {
        name: value + offset
        for name in _ID_FIELDS
        if (value := getattr(change, name)) is not None and value != 0
    }
    if now is not None:
        updates["timestamp"] = now.astimezone(UTC).replace(microsecond=0)
    return change.with_changes(**updates)


def rounds(changes: list[RecentChange], loop: bool) -> Iterator[tuple[int, RecentChange]]:
    """(round number, change) for one pass, or forever when `loop`."""
    span = id_span(changes)
    number = 0
    while True:
        for change in changes:
            yield number, (renumber(change, span * number, datetime.now(UTC)) if number else change)
        number += 1
        if not loop:
            return
