"""Codec benchmark: decode and encode rates per format, on one core, beside the raw
parser on the same bytes (the limit of the decode step).

    .venv/bin/python -m benchmarks.codec [--seconds 2]

Inputs are the real MediaWiki 1.39 packets in tests/data (edits, log actions,
unicode, 500-character comments), so the mix is what a wiki really sends.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from udp2xmpp.sink.stanza import message_text
from xmlrc.wire import (
    DatagramFormat,
    RecentChange,
    change_to_json,
    change_to_line,
    decode_datagram,
    encode_datagram,
)
from xmlrc.wire.rcxml import change_to_xml_text

DATA = Path(__file__).parents[1] / "tests" / "data" / "feed-packets.jsonl"


def rate(function: Callable[[Any], object], items: list[Any], seconds: float) -> float:
    """Calls per second of `function` over `items`, best of three rounds (CPU time)."""
    best = 0.0
    for _ in range(3):
        done = 0
        start = time.process_time()
        while time.process_time() - start < seconds / 3:
            for item in items:
                function(item)
            done += len(items)
        best = max(best, done / (time.process_time() - start))
    return best


def main(seconds: float) -> None:
    packets = [json.loads(line) for line in DATA.read_text().splitlines()]
    json_feed = [p["data"].encode() for p in packets if p["port"] == 9390]
    xml_feed = [p["data"].encode() for p in packets if p["port"] == 9391]
    changes = [c for c in map(decode_datagram, json_feed) if isinstance(c, RecentChange)]
    xmlrc = [encode_datagram(c, DatagramFormat.XMLRC) for c in changes]
    parser = etree.XMLParser(resolve_entities=False, no_network=True)

    print(f"# {len(changes)} real MediaWiki changes; events/s on one core (CPU time)")
    print(f"{'step':46} {'events/s':>10} {'us/event':>9} {'vs raw parse':>13}")
    rows: list[tuple[str, float, float | None]] = []
    raw_json = rate(json.loads, json_feed, seconds)
    raw_xml = rate(lambda d: etree.fromstring(d, parser), xml_feed, seconds)
    raw_xmlrc = rate(lambda d: etree.fromstring(d, parser), xmlrc, seconds)
    rows += [
        ("raw json.loads (MediaWiki JSON feed)", raw_json, None),
        ("decode MediaWiki JSON feed", rate(decode_datagram, json_feed, seconds), raw_json),
        ("raw lxml parse (MediaWiki XML feed)", raw_xml, None),
        ("decode MediaWiki XML feed", rate(decode_datagram, xml_feed, seconds), raw_xml),
        ("raw lxml parse (XMLRC <rc>)", raw_xmlrc, None),
        ("decode XMLRC <rc>", rate(decode_datagram, xmlrc, seconds), raw_xmlrc),
        ("encode <rc> text", rate(change_to_xml_text, changes, seconds), None),
        ("encode IRC body line", rate(change_to_line, changes, seconds), None),
        ("encode recentchange JSON", rate(lambda c: json.dumps(change_to_json(c)), changes,
                                          seconds), None),
        ("encode the whole room message (stanza text)",
         rate(lambda c: message_text(c, "enwiki@conference.example.org"), changes, seconds),
         None),
    ]  # fmt: skip
    for name, events, baseline in rows:
        ratio = f"{events / baseline:.2f}" if baseline else ""
        print(f"{name:46} {events:10.0f} {1e6 / events:9.1f} {ratio:>13}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU time per row")
    main(parser.parse_args().seconds)
