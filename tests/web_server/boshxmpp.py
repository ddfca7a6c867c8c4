"""A minimal BOSH client (XEP-0124/0206), the browser page's fallback, for tests.

Each request is one ``<body/>`` with the next ``rid``; the answer's children are
the stanzas the server had for us. Only what the tests need, each request bounded.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]

from .wsxmpp import BIND, CLIENT, MUC, MUC_USER, SASL, q

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"


class Bosh:
    def __init__(self, http: aiohttp.ClientSession, url: str, domain: str) -> None:
        self.http = http
        self.url = url
        self.domain = domain
        self.rid = 1000
        self.sid = ""
        self.jid = ""
        self.pending: list[ET.Element] = []

    async def request(self, payload: str = "", **attrs: str) -> ET.Element:
        self.rid += 1
        extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = f"<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' rid='{self.rid}'{sid}{extra}>"
        body += f"{payload}</body>"
        async with self.http.post(
            self.url, data=body, headers={"Content-Type": "text/xml; charset=utf-8"}
        ) as response:
            assert response.status == 200, response.status
            answer: ET.Element = SafeET.fromstring(await response.text())
        assert answer.get("type") != "terminate", ET.tostring(answer)
        return answer

    async def until(self, wanted: Callable[[ET.Element], bool], limit: int = 50) -> ET.Element:
        """The first stanza `wanted` accepts, polling at most `limit` times."""
        for _ in range(limit):
            while self.pending:
                element = self.pending.pop(0)
                if wanted(element):
                    return element
            self.pending.extend(await self.request())
        raise AssertionError(f"no wanted stanza in {limit} polls")

    async def login(self) -> str:
        answer = await self.request(
            to=self.domain, wait="5", hold="1", ver="1.6", **{"xmpp:version": "1.0"}
        )
        self.sid = answer.get("sid") or ""
        assert self.sid
        features = answer.find("{http://etherx.jabber.org/streams}features")
        if features is None:  # the features may come with the next answer
            features = await self.until(lambda e: e.tag.endswith("}features"))
        mechanisms = [m.text for m in features.iter(q(SASL, "mechanism"))]
        assert "ANONYMOUS" in mechanisms, mechanisms
        self.pending.extend(await self.request(f"<auth xmlns='{SASL}' mechanism='ANONYMOUS'/>"))
        await self.until(lambda e: e.tag == q(SASL, "success"))
        self.pending.extend(await self.request(to=self.domain, **{"xmpp:restart": "true"}))
        self.pending.extend(
            await self.request(
                f"<iq xmlns='{CLIENT}' type='set' id='bind'><bind xmlns='{BIND}'/></iq>"
            )
        )
        bound = await self.until(lambda e: e.tag == q(CLIENT, "iq") and e.get("id") == "bind")
        jid = bound.find(f"{q(BIND, 'bind')}/{q(BIND, 'jid')}")
        assert jid is not None and jid.text
        self.jid = jid.text
        return self.jid

    async def join(self, room: str, nick: str) -> ET.Element:
        full = f"{room}/{nick}"
        self.pending.extend(
            await self.request(
                f"<presence xmlns='{CLIENT}' to='{full}'><x xmlns='{MUC}'/></presence>"
            )
        )

        def own(e: ET.Element) -> bool:
            if e.tag != q(CLIENT, "presence") or e.get("from") != full:
                return False
            status = e.findall(f"{q(MUC_USER, 'x')}/{q(MUC_USER, 'status')}")
            return e.get("type") == "error" or any(s.get("code") == "110" for s in status)

        return await self.until(own)


@asynccontextmanager
async def bosh(url: str, domain: str) -> AsyncIterator[Bosh]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        client = Bosh(http, url, domain)
        try:
            yield client
        finally:
            if client.sid:
                client.rid += 1
                await http.post(
                    url,
                    data=f"<body xmlns='{HTTPBIND}' rid='{client.rid}' sid='{client.sid}' "
                    "type='terminate'/>",
                )
