"""A pure parser of the Server-Sent Events wire format (the WHATWG HTML standard, 9.2).

`SseParser.feed(chunk)` takes bytes as they arrive, cut anywhere, and returns the
events completed by them. Lines end with CRLF, LF or CR; a line starting with
``:`` is a comment (counted: a server's keepalive); ``field: value`` loses one
space after the colon; ``data`` lines are joined with LF; an event is dispatched
at a blank line, and only if it has data. The last event ID persists from one
event to the next (an event without ``id:`` keeps the previous one), and an
``id`` holding NUL is ignored, as the standard says. A line longer than `max_line`
bytes, or an event whose data is, is not buffered: its bytes are dropped as they come
and the event is dispatched empty with ``oversized`` set (its id still counts, so a
reader resuming from it does not ask for it again).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``message`` by default), data and last event ID."""

    event: str
    data: str
    last_id: str
    #: The ``retry:`` reconnection time in milliseconds, when this event set one.
    retry: int | None = None
    #: A line or the data was longer than the parser's limit: dropped, `data` is empty.
    oversized: bool = False


class SseParser:
    """Incremental SSE decoder; see the module docstring."""

    def __init__(self, max_line: int = 4 * 1024 * 1024) -> None:
        self.max_line = max_line
        #: Comment lines seen (``:`` keepalives), and the latest ``retry:`` value.
        self.comments = 0
        self.retry: int | None = None
        self.last_id = ""
        self._buffer = b""
        self._started = False
        self._skip_lf = False  # the previous chunk ended with CR: a LF next is its pair
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._size = 0
        self._retry_set: int | None = None
        self._oversized = False  # the current event lost a line or its data to the limit
        self._discarding = False  # inside a line past the limit: drop up to its end

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events `chunk` completes (possibly none)."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        if not chunk:
            return []
        data = self._buffer + chunk
        if not self._started:
            if len(data) < 3 and b"\xef\xbb\xbf".startswith(data):
                self._buffer = data
                return []
            self._started = True
            data = data.removeprefix(b"\xef\xbb\xbf")
        events: list[SseEvent] = []
        start = 0
        size = len(data)
        while start < size:
            cr = data.find(b"\r", start)
            lf = data.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, after = lf, lf + 1
            elif cr + 1 < size:
                end, after = cr, cr + 2 if data[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:  # CR at the end of the chunk: a line end, maybe half of a CRLF
                end, after = cr, cr + 1
                self._skip_lf = True
            if self._discarding or end - start > self.max_line:
                self._discarding = False  # the rest of a line too long: dropped
                self._oversized = True
            else:
                event = self._line(data[start:end])
                if event is not None:
                    events.append(event)
            start = after
        self._buffer = data[start:]
        if self._discarding or len(self._buffer) > self.max_line:
            self._discarding = True
            self._buffer = b""
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
            self._size += len(value)
            if self._size > self.max_line:
                self._oversized = True
                self._data = []
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = self._retry_set = int(value)
        return None  # other fields are ignored

    def _dispatch(self) -> SseEvent | None:
        event_type, self._event = self._event or "message", ""
        retry, self._retry_set = self._retry_set, None
        oversized, self._oversized = self._oversized, False
        has_data, self._has_data = self._has_data, False
        data, self._data, self._size = "\n".join(self._data), [], 0
        if oversized:
            return SseEvent(event_type, "", self.last_id, retry, oversized=True)
        if not has_data:
            return None
        return SseEvent(event_type, data, self.last_id, retry)
