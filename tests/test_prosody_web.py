"""The harness's web option: XMPP over WebSocket (RFC 7395) and BOSH on loopback HTTP, and
an anonymous host (SASL ANONYMOUS) for browser readers, on a real Prosody."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from harness.prosody import ProsodyServer


async def test_websocket_answers_an_open_for_the_anonymous_host_with_sasl_anonymous(
    prosody_factory: Callable[..., ProsodyServer],
) -> None:
    prosody = prosody_factory(web=True)
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(prosody.websocket_url, protocols=("xmpp",)) as ws,
    ):
        assert ws.protocol == "xmpp"
        await ws.send_str(
            '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" '
            f'to="{prosody.anonymous_domain}" version="1.0"/>'
        )
        frames = [(await ws.receive(timeout=10)).data for _ in range(2)]
    assert "<open" in frames[0] and prosody.anonymous_domain in frames[0]
    assert "<mechanism>ANONYMOUS</mechanism>" in frames[1]


async def test_bosh_is_served_too(prosody_factory: Callable[..., ProsodyServer]) -> None:
    prosody = prosody_factory(web=True)
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(prosody.bosh_url) as response,
    ):
        assert response.status == 200
        assert "BOSH" in await response.text()
