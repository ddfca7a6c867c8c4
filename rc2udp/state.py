"""The state file: where each wiki's polling resumes after a restart.

One JSON file for all the wikis of one ``rc2udp poll``, keyed by API URL::

    {"version": 1, "wikis": {"https://en.wikipedia.org/w/api.php":
        {"wiki": "enwiki", "timestamp": "2026-01-02T03:04:05Z", "seen": [[1234, "2026-..."]]}}}

It is rewritten after every page of changes is sent, atomically (a
temporary file, fsync, rename), so a crash leaves the previous or the new
version, never a torn one.  A resume point is saved only after its changes
were sent: after SIGTERM nothing is lost or repeated; after a hard kill the
changes of at most one page may be sent again (clients drop them by their
stable id).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xmlrc.wire import DecodeError
from xmlrc.wire.apijson import ResumePoint

_VERSION = 1


class StateError(Exception):
    """The state file exists but cannot be read."""


class StateFile:
    """Resume points by API URL, persisted in one JSON file (or only in memory)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._wikis: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            self._wikis = self._read(self.path)

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the state file {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise StateError(f"{path}: not an rc2udp state file (version {_VERSION})")
        wikis = data.get("wikis")
        if not isinstance(wikis, dict) or not all(isinstance(v, dict) for v in wikis.values()):
            raise StateError(f"{path}: 'wikis' is not an object of objects")
        for api, entry in wikis.items():
            try:
                ResumePoint.from_json(entry)
            except DecodeError as exc:
                raise StateError(f"{path}: {api}: {exc}") from None
        return wikis

    def get(self, api: str) -> ResumePoint | None:
        entry = self._wikis.get(api)
        return ResumePoint.from_json(entry) if entry is not None else None

    def put(self, api: str, wiki: str, resume: ResumePoint) -> None:
        """Record `resume` for `api` and write the file."""
        self._wikis[api] = {"wiki": wiki, **resume.to_json()}
        if self.path is None:
            return
        text = json.dumps({"version": _VERSION, "wikis": self._wikis}, indent=1, sort_keys=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
