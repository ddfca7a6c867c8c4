"""The wire format, defined once: sans-I/O codecs shared by all four packages.

- `model`: `RecentChange`, the one event model.
- `datagram`: bytes from UDP -> change or rejection, and back.
- `rcxml`: the ``<rc>`` element of stanzas and XMLRC datagrams.
- `jsonfeed`: MediaWiki's JSON feed and the EventStreams recentchange schema.
- `mwxml`: MediaWiki's ``XMLRCFeedFormatter``.
- `apijson`: the action API's ``list=recentchanges`` JSON.
- `ircline`: the readable ``<body>`` line.
- `size`: the exact size of a change's room message, and the worst case the limits allow.
- `signing`: signed datagrams (HMAC-SHA256, time, replay memory).
"""

from .datagram import MAX_DATAGRAM, DatagramFormat, decode_datagram, encode_datagram
from .errors import DecodeError, Rejection, RejectReason
from .ircline import change_to_line
from .jsonfeed import change_from_json, change_to_json
from .model import RecentChange
from .rcxml import NAMESPACE, change_from_element, change_to_element, change_to_xml
from .signing import SignatureChecker, sign, verify
from .size import encoded_size

__all__ = [
    "MAX_DATAGRAM",
    "NAMESPACE",
    "DatagramFormat",
    "DecodeError",
    "RecentChange",
    "RejectReason",
    "Rejection",
    "SignatureChecker",
    "change_from_element",
    "change_from_json",
    "change_to_element",
    "change_to_json",
    "change_to_line",
    "change_to_xml",
    "decode_datagram",
    "encode_datagram",
    "encoded_size",
    "sign",
    "verify",
]
