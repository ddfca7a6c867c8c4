"""No datagram, and no batch, makes a message larger than the server accepts (real Prosody).

A datagram within every field limit can encode to a stanza over the server's
limit (Prosody closes a c2s stream past 256 KiB, a component's past 512 KiB):
``&`` becomes ``&amp;``. The server then closed the stream, the bridge resent
the same message first after reconnecting, and every room stayed down. Now the
encoded message is measured at intake (refused as ``stanza_too_large``) and a
batch never grows past ``delivery.max_stanza_bytes``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from xmlrc_emitter import Emitter

MODES = ["client", "component"]


def mode_config(prosody: ProsodyServer, mode: str, wiki: str, **sections: Any) -> Any:
    xmpp: dict[str, Any] = {}
    if mode == "component":
        xmpp = {
            "mode": "component",
            "jid": prosody.component_domain,
            "password": prosody.component_secret,
            "port": prosody.component_port,
        }
    return bridge_config(prosody, xmpp=xmpp, rooms={"wikis": [wiki]}, **sections)


def log_datagram(wiki: str, rcid: int, ampersands: int) -> bytes:
    """A MediaWiki JSON feed log entry whose log parameters hold `ampersands` ``&``."""
    return json.dumps(
        {
            "id": rcid,
            "type": "log",
            "namespace": 2,
            "title": "User:Alice",
            "comment": "",
            "timestamp": 1_700_000_000 + rcid,
            "user": "Alice",
            "bot": False,
            "log_id": rcid,
            "log_type": "newusers",
            "log_action": "create",
            "log_params": {"note": "&" * ampersands},
            "log_action_comment": "",
            "server_url": "http://127.0.0.1",
            "server_name": "127.0.0.1",
            "server_script_path": "/w",
            "wiki": wiki,
        }
    ).encode()


def send_raw(bridge: Bridge, *datagrams: bytes) -> None:
    host, port = bridge.addresses[0]
    with Emitter(host, port) as emitter:
        for datagram in datagrams:
            emitter.send_raw(datagram)


@pytest.mark.parametrize("mode", MODES)
async def test_a_datagram_that_escapes_past_the_limit_is_refused_at_intake(
    prosody: ProsodyServer, mode: str
) -> None:
    wiki = f"big{mode}wiki"
    room = f"{wiki}@{prosody.muc_domain}"
    bridge = await running_bridge(mode_config(prosody, mode, wiki))
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            # 60,000 "&" fit a datagram and every field limit; escaped they are 300 kB.
            send_raw(bridge, log_datagram(wiki, 1, 60_000), log_datagram(wiki, 2, 10))
            got = await collect(client, 1)
        assert [d.change.rcid for d in got] == [2]
        assert bridge.stats.rejected["stanza_too_large"] == 1
        assert bridge.sink.stats.connections == 1  # the stream was never closed
    finally:
        await bridge.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_batches_of_large_changes_are_split_under_the_limit(
    prosody: ProsodyServer, mode: str
) -> None:
    """Several queued changes share a message (opt-in) only while it stays small enough:
    ten 100 kB changes would have made a 1 MB message."""
    wiki = f"batch{mode}wiki"
    room = f"{wiki}@{prosody.muc_domain}"
    config = mode_config(prosody, mode, wiki, delivery={"changes_per_stanza": 10})
    bridge = await running_bridge(config)
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        async with reader(prosody, [room]) as client:
            bridge.session.client.abort()  # a backlog builds up while it reconnects
            send_raw(bridge, *(log_datagram(wiki, n, 20_000) for n in range(1, 11)))
            got = await collect(client, 10, timeout=60)
        assert sorted(d.change.rcid for d in got) == list(range(1, 11))
        assert bridge.stats.rejected["stanza_too_large"] == 0
        assert bridge.sink.stats.connections == 2  # our abort, and no other
    finally:
        await bridge.stop()
