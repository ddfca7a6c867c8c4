"""XEP-0410 MUC self-ping: is this occupant still in its room? One verdict table.

A client pings its own occupant JID (``room@service/nick``). The room
answers for it, so the answer says whether the room still knows us. The
table is XEP-0410 section 3 (version 1.1), and it is the only one in
xmlrc: the bridge and rcclient both call `self_ping` or `verdict`.

- a result: joined;
- ``service-unavailable`` or ``feature-not-implemented``: joined (the room
  forwarded the ping; the occupant's client just does not answer pings);
- ``item-not-found``: joined (the occupant's nick changed meanwhile);
- ``remote-server-not-found`` or ``remote-server-timeout``: undecided,
  treated like a timeout;
- no answer within the timeout: undecided, ``timed_out`` (check the link);
- any other error (``not-acceptable``...): not joined; join again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

__all__ = ["PingResult", "Verdict", "self_ping", "verdict"]


class Verdict(StrEnum):
    """What a self-ping answer says about our membership."""

    JOINED = "joined"
    NOT_JOINED = "not-joined"
    UNDECIDED = "undecided"


#: Errors that still prove membership (XEP-0410 §3).
STILL_JOINED = frozenset({"service-unavailable", "feature-not-implemented", "item-not-found"})
#: Errors that decide nothing: the room's server could not be reached.
UNDECIDED_ERRORS = frozenset({"remote-server-not-found", "remote-server-timeout"})


def verdict(condition: str | None) -> Verdict:
    """The verdict for an answer: None for a result, else the error's condition."""
    if condition is None or condition in STILL_JOINED:
        return Verdict.JOINED
    if condition in UNDECIDED_ERRORS:
        return Verdict.UNDECIDED
    return Verdict.NOT_JOINED


@dataclass(frozen=True, slots=True)
class PingResult:
    """A self-ping's outcome: the verdict, the error condition if any, and whether
    nothing answered at all (our own link may be dead: the caller checks it)."""

    verdict: Verdict
    condition: str | None = None
    timed_out: bool = False


async def self_ping(
    client: Any, occupant: str, *, timeout: float, ifrom: str | None = None
) -> PingResult:
    """Ping `occupant` (``room@service/nick``) from `ifrom` (a component's own JID)."""
    sender = slixmpp.JID(ifrom) if ifrom is not None else None
    iq = client.make_iq_get(queryxmlns=None, ito=slixmpp.JID(occupant), ifrom=sender)
    iq.enable("ping")  # needs slixmpp's xep_0199 stanza plugin: `Session` registers it
    try:
        await iq.send(timeout=timeout)
    except IqTimeout:
        return PingResult(Verdict.UNDECIDED, None, timed_out=True)
    except IqError as exc:
        condition = exc.iq["error"]["condition"] or "undefined-condition"
        return PingResult(verdict(condition), condition)
    return PingResult(Verdict.JOINED)
