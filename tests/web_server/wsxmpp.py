"""A minimal XMPP-over-WebSocket client (RFC 7395), as the browser page speaks it.

One text frame is one element: ``<open/>``, ``<stream:features/>``, a stanza.
Only what the tests need: SASL ANONYMOUS or PLAIN, resource binding, sending
raw stanzas and reading the frames that come back, each read bounded.
"""

from __future__ import annotations

import base64
import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
CLIENT = "jabber:client"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
DELAY = "urn:xmpp:delay"


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def error_condition(element: ET.Element) -> str | None:
    """The defined condition of a stanza's <error/>, or None if it is no error."""
    error = element.find(q(CLIENT, "error"))
    if error is None:
        return None
    for child in error:
        if child.tag.startswith(f"{{{STANZAS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "undefined-condition"


class WsXmpp:
    """One XMPP session over a WebSocket; :attr:`jid` once bound."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, domain: str) -> None:
        self.ws = ws
        self.domain = domain
        self.jid = ""
        self.features: ET.Element | None = None
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"t{next(self._ids)}"

    async def send(self, xml: str) -> None:
        await self.ws.send_str(xml)

    async def frame(self, timeout: float = 20.0) -> ET.Element:
        message = await self.ws.receive(timeout=timeout)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"the WebSocket ended: {message.type!r} {message.data!r}")
        element: ET.Element = SafeET.fromstring(message.data)  # a server's frames
        return element

    async def until(
        self, wanted: Callable[[ET.Element], bool], *, limit: int = 500, timeout: float = 20.0
    ) -> ET.Element:
        """The first frame `wanted` accepts, reading at most `limit` frames."""
        for _ in range(limit):
            element = await self.frame(timeout)
            if wanted(element):
                return element
        raise AssertionError(f"no wanted frame among {limit}")

    async def open(self) -> ET.Element:
        """Open (or restart) the stream; returns its <stream:features/>."""
        await self.send(f'<open xmlns="{FRAMING}" to="{self.domain}" version="1.0"/>')
        opened = await self.frame()
        assert opened.tag == q(FRAMING, "open"), ET.tostring(opened)
        self.features = await self.frame()
        return self.features

    async def login(self, mechanism: str = "ANONYMOUS", user: str = "", password: str = "") -> str:
        await self.open()
        payload = ""
        if mechanism == "PLAIN":
            payload = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f'<auth xmlns="{SASL}" mechanism="{mechanism}">{payload}</auth>')
        answer = await self.frame()
        assert answer.tag == q(SASL, "success"), ET.tostring(answer)
        await self.open()
        bind = await self.iq("set", f'<bind xmlns="{BIND}"/>')
        assert bind.get("type") == "result", ET.tostring(bind)
        jid = bind.find(f"{q(BIND, 'bind')}/{q(BIND, 'jid')}")
        assert jid is not None and jid.text
        self.jid = jid.text
        return self.jid

    async def iq(self, kind: str, payload: str, to: str = "") -> ET.Element:
        """Send an IQ and return its answer (result or error)."""
        ident = self.next_id()
        target = f' to="{to}"' if to else ""
        await self.send(f'<iq xmlns="{CLIENT}" type="{kind}" id="{ident}"{target}>{payload}</iq>')
        return await self.until(lambda e: e.tag == q(CLIENT, "iq") and e.get("id") == ident)

    async def join(self, room: str, nick: str) -> ET.Element:
        """Ask to enter `room`; returns our own presence back, or the error presence."""
        full = f"{room}/{nick}"
        await self.send(f'<presence xmlns="{CLIENT}" to="{full}"><x xmlns="{MUC}"/></presence>')

        def own(e: ET.Element) -> bool:
            if e.tag != q(CLIENT, "presence") or e.get("from") != full:
                return False
            if e.get("type") == "error":
                return True
            status = e.findall(f"{q(MUC_USER, 'x')}/{q(MUC_USER, 'status')}")
            return any(s.get("code") == "110" for s in status)

        return await self.until(own)


@asynccontextmanager
async def websocket(url: str, domain: str) -> AsyncIterator[WsXmpp]:
    """A WebSocket with the "xmpp" subprotocol to `url`, closed on exit."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(url, protocols=("xmpp",)) as ws,
    ):
        assert ws.protocol == "xmpp"
        client = WsXmpp(ws, domain)
        try:
            yield client
        finally:
            if not ws.closed:
                await ws.send_str(f'<close xmlns="{FRAMING}"/>')
