"""udp2xmpp: the bridge daemon from wiki recent-change datagrams to XMPP rooms.

The folders follow a datagram: `source` (UDP in), `xmlrc.wire`
(decode), `route` (which rooms), `sink` (XMPP out); `bridge` wires them.
"""
