"""An adversarial corpus sent to a running bridge between valid datagrams.

The bridge stays up and on one connection, every valid datagram is delivered
exactly once, no attack datagram is, and each attack is counted under its
reason (the label /metrics shows).
"""

from __future__ import annotations

import json
import socket

from harness.prosody import ProsodyServer
from tests.fixtures import JSON_FEED_PORT, XML_FEED_PORT, packets
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from xmlrc.wire import RecentChange, decode_datagram, encode_datagram

WIKI = "advwiki"
GOOD_JSON = packets(JSON_FEED_PORT)[1].replace(b'"wiki":"testwiki"', b'"wiki":"advwiki"')
GOOD_XML = packets(XML_FEED_PORT)[1].replace(b'wiki="testwiki"', b'wiki="advwiki"')
RC = b'<rc wikiid="advwiki" type="edit" ns="0" title="T" timestamp="2026-01-01T00:00:00Z"'


def attacks() -> list[tuple[str, bytes, str]]:
    """(name, datagram, the reason it must be counted under)."""
    lol = b'<!ENTITY l0 "lol">' + b"".join(
        b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    good = json.loads(GOOD_JSON)

    def json_with(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    missing_title = dict(good)
    del missing_title["title"]
    return [
        ("billion laughs", b"<!DOCTYPE rc [" + lol + b"]>" + RC + b' comment="&l9;"/>',
         "forbidden_xml"),
        ("quadratic blowup", b'<!DOCTYPE rc [<!ENTITY a "' + b"x" * 20_000 + b'">]>' + RC
         + b' comment="' + b"&a;" * 2_000 + b'"/>', "forbidden_xml"),
        ("external entity", b'<!DOCTYPE rc [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + RC
         + b' comment="&x;"/>', "forbidden_xml"),
        ("external DTD", b'<!DOCTYPE rc SYSTEM "http://127.0.0.1:1/evil.dtd">' + RC + b"/>",
         "forbidden_xml"),
        ("10,000-deep nesting", b"<rc>" * 10_000 + b"</rc>" * 3_000, "bad_xml"),
        ("60 kB attribute", RC + b' comment="' + b"A" * 60_000 + b'"/>', "bad_field"),
        ("invalid UTF-8 in JSON", GOOD_JSON.replace(b'"Admin"', b'"Ad\xff\xfemin"'),
         "bad_encoding"),
        ("invalid UTF-8 in XML", GOOD_XML.replace(b'"Admin"', b'"Ad\xffmin"'), "bad_xml"),
        ("NUL in XML", GOOD_XML.replace(b'"Admin"', b'"Ad\x00min"'), "bad_xml"),
        ("JSON of the wrong type", json_with(namespace="zero"), "bad_field"),
        ("JSON with a boolean id", json_with(id=True), "bad_field"),
        ("JSON with a huge number", json_with(id=10**40), "bad_field"),
        ("JSON with a huge timestamp", json_with(timestamp=10**30), "bad_field"),
        ("JSON missing a field", json.dumps(missing_title).encode(), "missing_field"),
        ("JSON list", b"[" + GOOD_JSON + b"]", "unknown_format"),
        ("wiki ID with @", json_with(wiki="x@evil.example"), "bad_wiki"),
        ("wiki ID with /", json_with(wiki="advwiki/resource"), "bad_wiki"),
        ("wiki ID with a space", json_with(wiki="adv wiki"), "bad_wiki"),
        ("wiki ID in XML escaping the room", RC.replace(b'"advwiki"', b'"a@conference.x/n"')
         + b"/>", "bad_wiki"),
        ("truncated 65,507-byte datagram", GOOD_JSON[:-1] + b" " * (65_507 - len(GOOD_JSON)),
         "bad_json"),
        ("not a change at all", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unknown_format"),
        ("empty", b"", "empty"),
    ]  # fmt: skip


async def test_attacks_between_valid_datagrams(prosody: ProsodyServer) -> None:
    bridge = await running_bridge(bridge_config(prosody, rooms={"wikis": [WIKI]}))
    room = f"{WIKI}@{prosody.muc_domain}"
    corpus = attacks()
    sent_valid: list[RecentChange] = []
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            try:
                for rcid, (_name, attack, _reason) in enumerate(corpus, 1000):
                    valid = decode_datagram(GOOD_JSON)
                    assert isinstance(valid, RecentChange)
                    valid = valid.with_changes(rcid=rcid, title=f"Valid {rcid}")
                    sent_valid.append(valid)
                    sock.sendto(encode_datagram(valid), bridge.addresses[0])
                    sock.sendto(attack, bridge.addresses[0])
            finally:
                sock.close()
            got = await collect(client, len(sent_valid), quiet=1.0)
    finally:
        await bridge.stop()
    assert [d.change for d in got] == sent_valid  # every valid one, once, in order, intact
    expected: dict[str, int] = {}
    for _name, _attack, reason in corpus:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(bridge.stats.rejected) == expected
    assert bridge.stats.received == 2 * len(corpus)
    assert bridge.sink.stats.connections == 1  # never disconnected by what it published
