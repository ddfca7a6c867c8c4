"""rcclient: receive wiki recent changes from XMPP rooms as typed objects.

- `RCClient`: the asyncio client (``async with``; ``changes()``, ``events()``,
  ``@client.on_change(...)``, ``run()``);
- `iter_changes`: a blocking iterator for scripts and notebooks;
- `ChangeFilter`: keyword and callable filters combined as all / any / none;
- `Delivery`, `Gap`: what the client hands out; `RecentChange`: the change;
- `NodeReader`: the same changes from a PubSub node instead of a room.

Only the bridge speaks for a room: `RCClient` believes changes from the
publisher's nick (``publisher``, default ``rcbot``) holding the owner
affiliation, in moderated rooms; everything else is dropped and counted.
"""

from xmlrc.wire import RecentChange

from .blocking import ChangeStream, iter_changes
from .client import Delivery, Event, Gap, RCClient, RCClientError
from .filters import ChangeFilter
from .pubsub import NodeReader, NodeReaderError

__all__ = [
    "ChangeFilter",
    "ChangeStream",
    "Delivery",
    "Event",
    "Gap",
    "NodeReader",
    "NodeReaderError",
    "RCClient",
    "RCClientError",
    "RecentChange",
    "iter_changes",
]
