"""The SSE wire-format parser (udp2xmpp.source.sse), against the standard's rules."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from udp2xmpp.source.sse import SseEvent, SseParser

DATA = Path(__file__).resolve().parent.parent / "data" / "eventstreams"


def parse(*chunks: bytes) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


def test_a_frame_gives_its_type_data_and_id() -> None:
    events, _ = parse(b"event: message\nid: 7\ndata: hello\n\n")
    assert events == [SseEvent("message", "hello", "7")]


def test_data_lines_join_with_newlines_and_one_space_after_the_colon_goes() -> None:
    events, _ = parse(b"data:a\ndata:  b\ndata\n\n")
    assert events == [SseEvent("message", "a\n b\n", "")]


def test_every_line_ending_counts_crlf_lf_and_cr() -> None:
    events, _ = parse(b"data: one\r\n\r\ndata: two\r\rdata: three\n\n")
    assert [e.data for e in events] == ["one", "two", "three"]


def test_a_crlf_cut_between_two_chunks_is_one_line_end() -> None:
    events, _ = parse(b"data: x\r", b"\n", b"\r", b"\n")
    assert [e.data for e in events] == ["x"]


def test_comments_are_counted_and_dispatch_nothing() -> None:
    events, parser = parse(b":ok\n\n: keepalive\n:\n")
    assert events == []
    assert parser.comments == 3


def test_the_last_id_persists_until_changed_and_nul_ids_are_ignored() -> None:
    events, parser = parse(b"id: a\ndata: 1\n\ndata: 2\n\nid: b\x00c\ndata: 3\n\nid\ndata: 4\n\n")
    assert [e.last_id for e in events] == ["a", "a", "a", ""]
    assert parser.last_id == ""


def test_an_event_without_data_is_not_dispatched_and_resets_its_type() -> None:
    events, _ = parse(b"event: ping\n\ndata: x\n\n")
    assert events == [SseEvent("message", "x", "")]


def test_retry_sets_the_reconnection_time_only_when_digits() -> None:
    events, parser = parse(b"retry: 1500\ndata: x\n\nretry: soon\ndata: y\n\n")
    assert [e.retry for e in events] == [1500, None]
    assert parser.retry == 1500


def test_unknown_fields_and_a_leading_bom_are_ignored() -> None:
    events, _ = parse(b"\xef\xbb", b"\xbfdata: x\nfoo: bar\n\n")
    assert events == [SseEvent("message", "x", "")]


def test_an_unfinished_event_waits_for_its_blank_line() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\n") == []
    assert parser.feed(b"\n") == [SseEvent("message", "x", "")]


def test_a_line_past_the_limit_is_dropped_not_buffered_and_the_event_marked() -> None:
    parser = SseParser(max_line=100)
    events = parser.feed(b"id: 1\ndata: " + b"x" * 150)
    assert events == [] and parser._buffer == b""  # nothing kept of it
    events += parser.feed(b"x" * 500)
    assert parser._buffer == b""
    events += parser.feed(b"\n\nid: 2\ndata: small\n\n")
    assert events == [
        SseEvent("message", "", "1", oversized=True),
        SseEvent("message", "small", "2"),
    ]


def test_data_past_the_limit_over_several_lines_is_dropped_too() -> None:
    lines = b"".join(b"data: " + b"y" * 60 + b"\n" for _ in range(3))
    parser = SseParser(max_line=100)
    events = parser.feed(b"id: 9\n" + lines + b"\ndata: ok\n\n")
    assert events == [SseEvent("message", "", "9", oversized=True), SseEvent("message", "ok", "9")]
    assert parser.feed(b"id: 10\n" + lines + b"\n") == [
        SseEvent("message", "", "10", oversized=True)
    ]


def test_utf8_split_inside_a_character_is_decoded_whole() -> None:
    raw = "data: Ελληνικά\n\n".encode()
    events, _ = parse(raw[:8], raw[8:])
    assert events[0].data == "Ελληνικά"


def test_the_recorded_wikimedia_frames_parse_to_the_recorded_lines() -> None:
    raw = (DATA / "recentchange.sse").read_bytes()
    lines = (DATA / "recentchange.jsonl").read_text(encoding="utf-8").splitlines()
    events, _ = parse(raw)
    assert [e.data for e in events] == [lines[i - 1] for i in (6, 7, 8, 9, 10, 23, 25, 49)]
    assert all(e.event == "message" and e.last_id.startswith('[{"topic"') for e in events)


@given(st.lists(st.integers(min_value=1, max_value=64), max_size=30))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    raw = (DATA / "recentchange.sse").read_bytes()
    whole, _ = parse(raw)
    chunks, start = [], 0
    for cut in cuts:
        chunks.append(raw[start : start + cut])
        start += cut
    chunks.append(raw[start:])
    pieces, _ = parse(*chunks)
    assert pieces == whole
