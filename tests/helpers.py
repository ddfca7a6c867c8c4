"""Helpers for tests that run the bridge and a client against a real Prosody."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.prosody import ProsodyServer
from rcclient import Delivery, RCClient
from udp2xmpp.bridge import Bridge
from udp2xmpp.config import BridgeConfig, parse_config


def bridge_config(prosody: ProsodyServer, **sections: dict[str, Any]) -> BridgeConfig:
    """A bridge config for `prosody`, listening on a free loopback UDP port."""
    data: dict[str, Any] = {
        "xmpp": {
            "jid": prosody.jid("rcbot"),
            "password": "bridgepass",
            "host": prosody.host,
            "port": prosody.c2s_port,
            "ca_file": str(prosody.ca_file),
        },
        "udp": {"listen": "127.0.0.1:0"},
        "rooms": {"service": prosody.muc_domain, "room": "{wiki}", "nick": "rcbot"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, base_dir=Path("."))


def reader(prosody: ProsodyServer, rooms: list[str], **options: Any) -> RCClient:
    return RCClient(
        prosody.jid("reader"),
        "readerpass",
        rooms,
        host=prosody.host,
        port=prosody.c2s_port,
        ca_file=str(prosody.ca_file),
        **options,
    )


async def wait_for(
    condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def collect(
    client: RCClient, count: int, timeout: float = 30.0, quiet: float = 0.5
) -> list[Delivery]:
    """Read `count` deliveries, then keep listening `quiet` seconds to catch extras."""
    got: list[Delivery] = []

    async def read() -> None:
        async for delivery in client.deliveries():
            got.append(delivery)

    task = asyncio.create_task(read())
    try:
        await wait_for(lambda: len(got) >= count, timeout, f"{count} changes (got {len(got)})")
        await asyncio.sleep(quiet)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got


async def running_bridge(config: BridgeConfig) -> Bridge:
    bridge = Bridge(config)
    await bridge.start()
    await bridge.sink.wait_online(20)
    return bridge


async def archived_messages(prosody: ProsodyServer, room: str) -> list[Any]:
    """Every message in `room`'s archive (XEP-0313), oldest first, read as another user."""
    import slixmpp

    client = slixmpp.ClientXMPP(prosody.jid("intruder"), "intruderpass")
    for plugin in ("xep_0059", "xep_0313"):
        client.register_plugin(plugin)
    client.enable_direct_tls = False
    client.ca_certs = prosody.ca_file
    started = asyncio.Event()
    client.add_event_handler("session_start", lambda _: started.set())
    client.connect(prosody.host, prosody.c2s_port)
    messages: list[Any] = []
    try:
        await asyncio.wait_for(started.wait(), 20)
        mam = client.plugin["xep_0313"]
        # Page by hand: slixmpp's `iterate` swallows IQ errors, which would turn a
        # failed query into a silently short list.
        after: str | None = None
        for _page in range(1000):
            rsm: dict[str, object] = {"max": 250}
            if after is not None:
                rsm["after"] = after
            result = await mam.retrieve(jid=slixmpp.JID(room), rsm=rsm, timeout=30)
            page = result["mam"]["results"]
            messages.extend(page)
            after = result["mam_fin"]["rsm"]["last"] or None
            if not page or after is None or result["mam_fin"]["complete"]:
                break
    finally:
        client.disconnect()
        await asyncio.sleep(0)
    return messages


async def archived_stable_ids(prosody: ProsodyServer, room: str) -> list[str]:
    """Every stable id in `room`'s archive, in archive order, duplicates kept."""
    return [
        str(origin.get("id"))
        for message in await archived_messages(prosody, room)
        for origin in message.xml.iter("{urn:xmpp:sid:0}origin-id")
    ]


async def archived_change_ids(server: Any, room: str) -> list[str]:
    """Every change's stable id in `room`'s archive, oldest first, duplicates kept, read
    as "intruder" on any throwaway server (Prosody, an ejabberd node) with the product's
    own `query_page`, paged until a page comes back empty (`archived_messages`, on
    slixmpp's reader, stops after ejabberd's first page of 250)."""
    from xmlrc.wire.rcxml import changes_in_message
    from xmlrc.xmpp import Endpoint, Session
    from xmlrc.xmpp.archive import query_page

    session = Session(
        Endpoint(
            server.jid("intruder"),
            "intruderpass",
            server.host,
            server.c2s_port,
            str(server.ca_file),
        ),
        plugins=("xep_0059", "xep_0313"),
    )
    await session.start(wait=True)
    ids: list[str] = []
    after: str | None = None
    try:
        for _page in range(1000):
            page = await query_page(session.client, room, timeout=20, page_size=100, after=after)
            if not page.messages:
                break
            for stored in page.messages:
                ids.extend(change.stable_id for change in changes_in_message(stored.message))
            after = page.messages[-1].archive_id
    finally:
        await session.stop()
    return ids


def bridge_toml(prosody: ProsodyServer, udp_port: int, rooms: str) -> str:
    """A bridge config file for `prosody` (password from $TEST_BRIDGE_PASSWORD);
    `rooms` is the rest of the [rooms] section and any sections after it."""
    return f"""
[xmpp]
jid = "rcbot@{prosody.domain}"
password_env = "TEST_BRIDGE_PASSWORD"
host = "{prosody.host}"
port = {prosody.c2s_port}
ca_file = "{prosody.ca_file}"
[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{prosody.muc_domain}"
{rooms}"""
