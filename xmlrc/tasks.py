"""Owned background tasks: every long-lived task is supervised and cancelled on shutdown.

A `TaskGroup`-like owner that outlives its callers' frames: `spawn` runs a
coroutine factory; if the coroutine fails (a bug, a bad input nobody
foresaw) the failure is logged and the task restarted after a pause,
instead of a digest or a room going silent for good. `close` cancels them
all and waits; it never raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

Factory = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Owns background tasks: restarts the ones that fail, cancels all on `close`."""

    def __init__(self, restart_delay: float = 1.0, max_restart_delay: float = 60.0) -> None:
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        #: Restarts after a failure, all tasks together.
        self.restarts = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def spawn(self, factory: Factory, name: str, *, restart: bool = True) -> asyncio.Task[None]:
        """Run ``factory()`` as a task named `name`; restart it when it fails (``restart``)."""
        coro = self._guard(factory, name) if restart else factory()
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._closing:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _guard(self, factory: Factory, name: str) -> None:
        delay = self.restart_delay
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts += 1
                log.exception("task %s failed; restarting it in %.0f s", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_restart_delay)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait for them; never raises."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
