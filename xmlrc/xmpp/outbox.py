"""Outbound pacing: a token bucket on stanzas and bytes per second (pure, clock passed in).

XMPP servers throttle or disconnect a client that writes faster than its
allowance (Prosody's mod_limits, ejabberd's shapers); pacing below it keeps
the bridge connected. A burst of up to one second's worth goes out at once.
"""

from __future__ import annotations


class Pacer:
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
