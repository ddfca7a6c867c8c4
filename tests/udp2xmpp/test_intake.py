"""The UDP source hands every datagram of a burst to the bridge, none twice."""

from __future__ import annotations

import asyncio
import socket

from udp2xmpp.source.udp import UdpSource


async def test_a_burst_is_read_whole_and_in_order() -> None:
    got: list[bytes] = []
    source = UdpSource("127.0.0.1", 0, lambda data, addr: got.append(data),
                       receive_buffer=16 * 1024 * 1024)  # fmt: skip
    host, port = await source.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for number in range(3000):  # more than one read batch (256), several times over
            sender.sendto(b"%d" % number, (host, port))
        for _ in range(500):
            if len(got) >= 3000:
                break
            await asyncio.sleep(0.01)
    finally:
        sender.close()
        source.close()
        await source.wait_closed()
    assert got == [b"%d" % n for n in range(3000)]
