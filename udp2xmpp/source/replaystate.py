"""``udp.replay_state_file``: the replay memory of signed datagrams, kept across restarts.

Without it a bridge forgets, when it restarts, the MACs it accepted, and a
datagram captured before the restart can be replayed after it (until its
signature goes stale, ``udp.signature_window`` seconds). With it, the MACs
still within the window (at most ``udp.replay_memory``) and the floor are
written to the file, and read back at startup.

When: right away when a signed datagram is accepted and the last write is a
second old or more, else one second after the last write (a short task, which
also writes when it is cancelled at shutdown). So at most one write a second,
and what is lost in a crash is at most the last second.

Two bridges (the overlapping handover of a restart with SO_REUSEPORT) share
the file: each write merges what the other wrote since (under an flock on
``FILE.lock``), and each one reads the other's news at its own next write,
so a MAC accepted by one is known to the other within about two seconds.

Written atomically (a temporary file, then rename), mode 0600. A damaged or
unreadable file is logged and ignored (the bridge starts with an empty memory
rather than not at all); a failed write is logged, rate-limited, and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from xmlrc.wire.signing import (
    SignatureChecker,
    decode_replay_state,
    encode_replay_state,
)

from ..throttled_log import RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds between two writes, at most one in between.
SAVE_INTERVAL = 1.0


class ReplayStateFile:
    """Keeps one `SignatureChecker`'s replay memory in one file (see the module)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        checker: SignatureChecker,
        *,
        interval: float = SAVE_INTERVAL,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.checker = checker
        self.interval = interval
        self._wall = wall
        self._monotonic = monotonic
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._tmp_path = self.path.with_name(f"{self.path.name}.tmp.{os.getpid()}")
        #: `checker.accepted` when last written: more since means news to write.
        self._saved = -1
        #: (inode, mtime, size) of the file as we last wrote or read it.
        self._seen: tuple[int, int, int] | None = None
        self._last_sync = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._errors = RateLimitedLog(log, burst=3, period=60.0)
        #: Writes done, and MACs learned from the file (a previous run, another bridge).
        self.writes = 0
        self.merged = 0

    def load(self) -> int:
        """Read the file at startup; returns the MACs remembered from it."""
        before = self.merged
        self._read_if_changed()
        if self.merged > before:
            log.info(
                "replay memory: %d signatures remembered from %s", self.merged - before, self.path
            )
        return self.merged - before

    def note_accepted(self) -> None:
        """A signed datagram was just accepted: write now, or within `interval`."""
        if self._task is not None:
            return  # a write is already due
        wait = self._last_sync + self.interval - self._monotonic()
        if wait <= 0:
            self.sync()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (pure tests): the next accepted datagram writes
            return
        self._task = loop.create_task(self._later(wait), name="replay state")

    async def _later(self, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:  # cancelled at shutdown too: write what we have
            self._task = None
            self.sync()

    @property
    def pending(self) -> bool:
        """Whether accepted signatures are not written yet."""
        return self.checker.accepted != self._saved

    def sync(self) -> None:
        """Merge what another writer put in the file, then write if there is news."""
        self._last_sync = self._monotonic()
        try:
            lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._errors.warning("replay state %s: cannot lock: %s", self.path, exc)
            return
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # the other bridge is writing: our turn next time
                self._retry()
                return
            self._read_if_changed()
            if self.pending:
                self._write()
        finally:
            os.close(lock)  # releases the lock

    def _retry(self) -> None:
        with contextlib.suppress(RuntimeError):
            if self._task is None:
                loop = asyncio.get_running_loop()
                self._task = loop.create_task(self._later(self.interval), name="replay state")

    def close(self) -> None:
        """Write what is pending now (at shutdown), and stop the timer."""
        if self._task is not None:
            self._task.cancel()  # its finally writes again; harmless
            self._task = None
        if self.pending:
            self.sync()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _read_if_changed(self) -> None:
        try:
            seen = self._stat()
            if seen is None or seen == self._seen:
                return
            data = self.path.read_bytes()
        except OSError as exc:
            self._errors.warning("replay state %s: cannot read: %s", self.path, exc)
            return
        self._seen = seen
        try:
            state = decode_replay_state(data)
        except ValueError as exc:
            log.warning("replay state %s: ignored, %s", self.path, exc)
            return
        self.merged += self.checker.merge(state, self._wall())

    def _write(self) -> None:
        accepted = self.checker.accepted
        data = encode_replay_state(self.checker.snapshot(self._wall()))
        try:
            fd = os.open(
                self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(self._tmp_path, self.path)
            self._seen = self._stat()
        except OSError as exc:
            self._errors.warning("replay state %s: cannot write: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(self._tmp_path)
            self._retry()
            return
        self._saved = accepted
        self.writes += 1
