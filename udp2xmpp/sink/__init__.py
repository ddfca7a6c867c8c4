"""Sink: changes out to XMPP rooms."""
