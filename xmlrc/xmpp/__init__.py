"""The XMPP layer every xmlrc program uses: one module per job, one XEP per module.

- `session`: one stream kept up (connect, TLS verified by default, reconnect
  with backoff and jitter, keepalive pings, state) - RFC 6120, XEP-0198, XEP-0199.
- `muc`: join, room configuration, affiliations, disco#info - XEP-0045.
- `selfping`: the one verdict table of XEP-0410 section 3.
- `archive`: a page of a room's archive - XEP-0313.
- `outbox`: the paced writer (stanza and byte budgets) and its token bucket.
- `fastpath`: slixmpp's client and component with ready-made stanza text out
  and our own reflections dropped before parsing.

The bridge (`udp2xmpp`) and the client (`rcclient`) are thin users of it;
neither opens a connection, joins a room or pings on its own.
"""

from .muc import JoinError, Occupancy, RoomInfo
from .outbox import Outbox, Pacer
from .selfping import PingResult, Verdict, self_ping, verdict
from .session import Backoff, Endpoint, Session, SessionError

__all__ = [
    "Backoff",
    "Endpoint",
    "JoinError",
    "Occupancy",
    "Outbox",
    "Pacer",
    "PingResult",
    "RoomInfo",
    "Session",
    "SessionError",
    "Verdict",
    "self_ping",
    "verdict",
]
