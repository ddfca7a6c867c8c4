"""Access to the real MediaWiki 1.39 packets and API output in tests/data/."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"

JSON_FEED_PORT = 9390  # JSONRCFeedFormatter
XML_FEED_PORT = 9391  # XMLRCFeedFormatter
IRC_FEED_PORT = 9392  # IRCColourfulRCFeedFormatter, interwiki prefix on
JSON_NOBOTS_PORT = 9393  # JSONRCFeedFormatter with omit_bots

_IRC_COLOURS = re.compile(r"\x03\d{0,2}|\x02")


@cache
def packets(port: int) -> tuple[bytes, ...]:
    """The datagrams MediaWiki sent to one port, in order."""
    out = []
    for line in (DATA / "feed-packets.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["port"] == port:
            out.append(record["data"].encode())
    return tuple(out)


def irc_lines_without_colours() -> list[str]:
    """MediaWiki's IRC lines, colours stripped and the interwiki prefix removed."""
    return [
        _IRC_COLOURS.sub("", p.decode()).rstrip("\n").replace("[[testwiki:", "[[", 1)
        for p in packets(IRC_FEED_PORT)
    ]


@cache
def api_items(formatversion: int = 2) -> tuple[dict[str, Any], ...]:
    name = "api-recentchanges-fv2.json" if formatversion == 2 else "api-recentchanges.json"
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    return tuple(data["query"]["recentchanges"])
