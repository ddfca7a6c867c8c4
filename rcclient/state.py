"""The resume state: per room, the archive id of the last change handed out.

A small JSON file::

    {"version": 1, "rooms": {"enwiki@conference.example.org":
        {"archive_id": "Oxa_1r5fcq3KALM0r4yo6SvP", "timestamp": "2026-01-02T03:04:05Z",
         "recent": ["enwiki/123", ...]}}}

``archive_id`` is the room archive's id (XEP-0313/XEP-0359 ``stanza-id``)
of the last change the program was given, ``timestamp`` that change's time;
a restarted client asks the archive for what came after it. ``recent``
holds the stable ids of the last changes handed out, so a change the bridge
resent (archived twice) is not given again after a restart.

Writes are atomic (a temporary file in the same directory, flushed to disk,
then renamed over the old one), so a crash leaves the old state or the new
one, never a torn file. The client debounces them (see `RCClient`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from xmlrc.wire.model import iso_from_utc, utc_from_iso

__all__ = ["RoomPosition", "StateError", "StateFile"]

VERSION = 1
RECENT = 256


class StateError(Exception):
    """The state file cannot be read or written."""


@dataclass
class RoomPosition:
    """Where reading one room got to: its last archive id and time, and recent change ids."""

    archive_id: str | None = None
    timestamp: datetime | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))


class StateFile:
    """The resume state of one program, kept in memory and saved on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rooms: dict[str, RoomPosition] = {}
        self.dirty = False

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StateFile:
        """Read `path`; a missing file is an empty state, a bad one a `StateError`."""
        state = cls(path)
        try:
            text = state.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return state
        except OSError as exc:
            raise StateError(f"cannot read state file {state.path}: {exc.strerror}") from None
        try:
            state.rooms = _parse(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise StateError(f"state file {state.path} is not valid: {exc}") from None
        return state

    def position(self, room: str) -> str | None:
        entry = self.rooms.get(room)
        return entry.archive_id if entry else None

    def timestamp(self, room: str) -> datetime | None:
        entry = self.rooms.get(room)
        return entry.timestamp if entry else None

    def recent(self, room: str) -> list[str]:
        entry = self.rooms.get(room)
        return list(entry.recent) if entry else []

    def record(
        self,
        room: str,
        archive_id: str | None,
        stable_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Remember that the change `stable_id` (archive id `archive_id`, time
        `timestamp`) of `room` was handled."""
        if archive_id is None and stable_id is None:
            return
        entry = self.rooms.setdefault(room, RoomPosition())
        if archive_id is not None:
            entry.archive_id = archive_id
        if timestamp is not None:
            entry.timestamp = timestamp
        if stable_id is not None:
            entry.recent.append(stable_id)
        self.dirty = True

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "rooms": {
                room: {
                    "archive_id": entry.archive_id,
                    "timestamp": iso_from_utc(entry.timestamp) if entry.timestamp else None,
                    "recent": list(entry.recent),
                }
                for room, entry in sorted(self.rooms.items())
            },
        }

    def save(self) -> None:
        """Write the state atomically; raises `StateError` when that fails."""
        data = json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n"
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        except OSError as exc:
            raise StateError(f"cannot write state file {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise StateError(f"cannot write state file {self.path}: {exc.strerror}") from None
        _fsync_directory(directory)
        self.dirty = False


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse(data: Any) -> dict[str, RoomPosition]:
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"expected an object with version {VERSION}")
    rooms = data.get("rooms")
    if not isinstance(rooms, dict):
        raise ValueError("'rooms' is not an object")
    out: dict[str, RoomPosition] = {}
    for room, entry in rooms.items():
        if not isinstance(entry, dict):
            raise ValueError(f"rooms.{room} is not an object")
        archive_id = entry.get("archive_id")
        if archive_id is not None and not isinstance(archive_id, str):
            raise ValueError(f"rooms.{room}.archive_id is not a string")
        stamp = entry.get("timestamp")
        if stamp is not None and not isinstance(stamp, str):
            raise ValueError(f"rooms.{room}.timestamp is not a string")
        timestamp = utc_from_iso(stamp) if stamp else None
        recent = entry.get("recent", [])
        if not isinstance(recent, list) or not all(isinstance(i, str) for i in recent):
            raise ValueError(f"rooms.{room}.recent is not a list of strings")
        out[room] = RoomPosition(archive_id, timestamp, deque(recent[-RECENT:], maxlen=RECENT))
    return out
