"""The outbox: one paced writer per stream, on a token bucket of stanzas and bytes a second.

XMPP servers throttle or disconnect a client that writes faster than its
allowance (Prosody's mod_limits, ejabberd's shapers); pacing below it keeps
the bridge connected. A burst of up to one second's worth goes out at once.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Pacer:
    """Token buckets on stanzas and bytes per second (pure: the clock is passed in)."""

    def __init__(self, stanzas_per_second: float, bytes_per_second: float) -> None:
        self.stanza_rate = stanzas_per_second
        self.byte_rate = bytes_per_second
        self._stanzas = stanzas_per_second
        self._bytes = bytes_per_second
        self._last: float | None = None

    def delay(self, size: int, now: float) -> float:
        """Seconds to wait before a stanza of `size` bytes may go; 0 means send now.

        When it returns 0 the stanza's cost has been taken; otherwise nothing
        is taken and the caller asks again after waiting.
        """
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            if self.stanza_rate:
                self._stanzas = min(self.stanza_rate, self._stanzas + elapsed * self.stanza_rate)
            if self.byte_rate:
                self._bytes = min(self.byte_rate, self._bytes + elapsed * self.byte_rate)
        self._last = now
        wait = 0.0
        if self.stanza_rate and self._stanzas < 1:
            wait = (1 - self._stanzas) / self.stanza_rate
        # A stanza larger than a whole second's allowance may go once the bucket is full.
        if self.byte_rate and self._bytes < min(size, self.byte_rate):
            wait = max(wait, (min(size, self.byte_rate) - self._bytes) / self.byte_rate)
        if wait > 0:
            return wait
        if self.stanza_rate:
            self._stanzas -= 1
        if self.byte_rate:
            self._bytes -= size
        return 0.0


class Outbox:
    """The stream's one writer: rooms, PubSub and notifications draw from one stanza and
    byte budget, so together they stay under the server's shaper (which counts per stream).

    Producers with a hot path ask `delay` per stanza and `write` batches of ready-made
    text; others `await send(text)`.
    """

    def __init__(self, client: Any, stanzas_per_second: float, bytes_per_second: float) -> None:
        self.client = client
        self.pacer = Pacer(stanzas_per_second, bytes_per_second)
        #: Stanzas written through this outbox.
        self.written = 0

    def delay(self, size: int) -> float:
        """Seconds to wait before a stanza of `size` bytes may go; 0: go (its cost taken)."""
        return self.pacer.delay(size, asyncio.get_running_loop().time())

    def write(self, texts: list[str]) -> None:
        """Write serialised stanzas now, in one system call (XEP-0198 counts them)."""
        self.client.send_texts(texts)
        self.written += len(texts)

    async def send(self, text: str) -> None:
        """Write one stanza as soon as the budget allows."""
        size = len(text)
        while wait := self.delay(size):  # noqa: ASYNC110 - a token bucket refills with time
            await asyncio.sleep(wait)
        self.write([text])
