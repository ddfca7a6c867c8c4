"""Throwaway aiohttp servers on 127.0.0.1 that play a wiki's API, for the rc2udp tests.

`serving` runs one application on a free loopback port for the length of an
``async with`` and always cleans it up; `Recorder` keeps what each request
carried (method, parameters, cookies, arrival time) so tests can assert what
rc2udp sent, and to whom.  `Sleeps` stands in for ``asyncio.sleep``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve every path with `handler` on 127.0.0.1; yields the origin (``http://127.0.0.1:P``)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    params: dict[str, str]
    cookies: dict[str, str]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


@dataclass
class Recorder:
    """Every request a server received, in order."""

    requests: list[Seen] = field(default_factory=list)

    async def note(self, request: web.Request) -> Seen:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        seen = Seen(
            request.method,
            request.path,
            params,
            dict(request.cookies),
            dict(request.headers),
            time.monotonic(),
        )
        self.requests.append(seen)
        return seen


class Sleeps(list[float]):
    """Stands in for asyncio.sleep: records each delay the client asks for."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
