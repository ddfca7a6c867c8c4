"""slixmpp's client and component, with a fast path for the stanzas a publisher sends a lot.

slixmpp builds a stanza object for every stanza and serialises it in pure
Python, then matches every incoming stanza against every handler. For the
bridge's traffic that is most of its CPU: each change it publishes is a
message out and, because a MUC reflects messages to their sender, a
message back in. So:

- outgoing change messages are written as ready-made text (`send_text`),
  with XEP-0198 bookkeeping done here so stream management still counts
  them and can resend them after a resumption;
- our own reflected groupchat messages are recognised on the raw element
  and dropped before a stanza object is built (still counted for XEP-0198).
Everything else (presence, IQ, errors) takes slixmpp's ordinary path.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import slixmpp

_MAX_SEQ = 2**32


class FastPath:
    """Mixed into slixmpp's client and component classes (see the module docstring)."""

    #: Full occupant JIDs (room@service/nick) whose reflections we drop.
    reflected_from: set[str]

    def _init_fast_path(self) -> None:
        self.reflected_from = set()

    def debounce_acks(self, delay: float) -> None:
        """Answer the server's XEP-0198 ack requests at most once per `delay` seconds.

        Prosody asks for an ack after the stanzas it sends us, and it sends us
        one reflection per change: answering each at once costs a write (and on
        loopback the server's TCP receive work) per change. One ack a little
        later counts them all; the protocol allows it.
        """
        sm = self._stream_management()
        if sm is None:
            return
        send_now = sm.send_ack
        pending: list[asyncio.TimerHandle] = []

        def flush() -> None:
            pending.clear()
            send_now()

        def send_ack() -> None:
            if not pending:
                pending.append(asyncio.get_running_loop().call_later(delay, flush))

        sm.send_ack = send_ack

    def _stream_management(self) -> Any:
        plugins: Any = getattr(self, "plugin", {})
        return plugins["xep_0198"] if "xep_0198" in plugins else None  # noqa: SIM401

    def send_texts(self, texts: list[str]) -> None:
        """Write serialised stanzas in one go, counting them for XEP-0198 as slixmpp would."""
        sm = self._stream_management()
        ask_ack = False
        if sm is not None and sm.enabled_out:
            for text in texts:
                sm.seq = (sm.seq + 1) % _MAX_SEQ
                sm.unacked_queue.append((sm.seq, text))  # resent as text after a resumption
                sm.window_counter -= 1
                if sm.window_counter <= 0:
                    sm.window_counter = sm.window
                    ask_ack = True
        self.send_raw("".join(texts))  # type: ignore[attr-defined]
        if ask_ack:
            sm.request_ack()

    def _spawn_event(self, xml: ET.Element) -> None:
        if (
            xml.get("type") == "groupchat"
            and xml.get("from") in self.reflected_from
            and xml.tag.endswith("}message")
        ):
            sm = self._stream_management()
            if sm is not None and sm.enabled_in:
                sm.handled = (sm.handled + 1) % _MAX_SEQ
            return
        super()._spawn_event(xml)  # type: ignore[misc]


class BridgeClient(FastPath, slixmpp.ClientXMPP):
    """A c2s stream (STARTTLS, SASL, XEP-0198) with the fast path."""

    def __init__(self, jid: str, password: str) -> None:
        slixmpp.ClientXMPP.__init__(self, jid, password)
        self._init_fast_path()


class BridgeComponent(FastPath, slixmpp.ComponentXMPP):
    """An XEP-0114 component stream with the fast path."""

    def __init__(self, jid: str, secret: str, host: str, port: int) -> None:
        slixmpp.ComponentXMPP.__init__(self, jid, secret, host, port)
        self._init_fast_path()
