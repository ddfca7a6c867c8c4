"""The publisher's accounts: the one rule for "is this real JID the bridge's?".

Where a room shows its occupants' real JIDs (to moderators, or in a
non-anonymous room, and in such a room's archive), `rcclient.RCClient` (live
and in catch-up) and `rcclient.audit.archived_distrust` hold the sender under
the publisher's nick to this rule: its bare JID must be one of the
publisher's. A bridge pair has two accounts (whichever holds the publisher's
nick in a room publishes there, the other takes over when it dies), so a
reader names both. JIDs are compared bare and lower-cased.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["jid_distrust", "publisher_jids"]


def _bare(jid: str) -> str:
    return jid.partition("/")[0].strip().lower()


def publisher_jids(jids: str | Iterable[str] | None) -> frozenset[str]:
    """The publisher's accounts as bare, lower-cased JIDs: `jids` is one JID (a str),
    several (a bridge pair's two accounts), or None (the real JID is not checked;
    so is ``""``, as it always was). A resource is dropped; an empty JID in a
    list is a `ValueError`, anything but a str a `TypeError`."""
    if jids is None or (isinstance(jids, str) and not jids):
        return frozenset()
    given = (jids,) if isinstance(jids, str) else tuple(jids)
    out = set()
    for jid in given:
        if not isinstance(jid, str):
            raise TypeError(f"publisher_jid: expected JIDs (str), not {jid!r}")
        bare = _bare(jid)
        if not bare:
            raise ValueError(f"publisher_jid: not a JID: {jid!r}")
        out.add(bare)
    return frozenset(out)


def jid_distrust(nick: str, jid: str | None, publishers: frozenset[str]) -> str | None:
    """Why the occupant `nick`, whose real JID is `jid`, is not the publisher, or None:
    None also when the room hides the JID (`jid` is None) or no accounts are
    given. `publishers` comes from `publisher_jids`."""
    if not publishers or not jid:
        return None
    bare = _bare(jid)
    if bare in publishers:
        return None
    return f"sent by {nick!r} as {bare}, not as {' or '.join(sorted(publishers))}"
