"""Personal watch lists: people ask the bridge, by chat or ad-hoc command, to tell them
when a page, a user or a filter of a wiki changes.

- `commands`: the chat commands, parsed (pure).
- `model`: what can be watched; name normalisation (pure).
- `index`: who watches a change, in O(1) lookups (pure).
- `limits`: per-user rate and volume limits, digests, bounce counting (pure, clock passed in).
- `messages`: the notification, digest and reply stanzas (pure).
- `adhoc`: the XEP-0050 forms (pure).
- `store`: SQLite, versioned schema, one bridge per file.
- `manager`: the logic, without XMPP.
- `service`: the XMPP shell on the bridge's connection.
"""

from .service import SubscriptionService
from .store import StoreError, StoreLockedError

__all__ = ["StoreError", "StoreLockedError", "SubscriptionService"]
