"""xmlrc's core: the event model and wire codecs (`xmlrc.wire`), the XMPP layer
(`xmlrc.xmpp`) and the one filter engine (`xmlrc.filters`).

The four programs (udp2xmpp, rcclient, rc2udp, xmlrc_emitter) are shells
around this package; none of them parses or builds the wire format itself.
"""
