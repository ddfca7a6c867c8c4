"""What the throwaway servers (Prosody, MediaWiki, ejabberd) share.

A working directory they may own, a context manager that starts the server
and always cleans up after it, and the tail of its log for error messages.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self


class ThrowawayServer(ABC):
    _dir: Path
    #: True when the directory was made for this server (and is removed with it).
    _owns_dir: bool = True

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @property
    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def log_text(self) -> str: ...

    def cleanup(self) -> None:
        """Stop the server and remove the directory if this object made it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.cleanup()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _tail(self, lines: int = 40) -> str:
        """The last log lines, for an error message."""
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"\n--- last log lines ({self._dir}) ---\n{tail}" if tail else ""
