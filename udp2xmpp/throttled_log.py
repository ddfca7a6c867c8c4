"""Warnings about bad input, rate-limited so a flood cannot flood the log too."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most `burst` warnings per `period` seconds; the rest are counted, then summarised."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        self._log(logging.WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        """An error that a flood could repeat (one per refused room, say): same budget."""
        self._log(logging.ERROR, message, *args)

    def _log(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self._suppressed:
                self.logger.warning("%d more similar warnings suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count <= self.burst:
            self.logger.log(level, message, *args)
        else:
            self._suppressed += 1
