"""XEP-0313 message archive: one page of a room's archive, forward or backward.

One query at a time per call; its results are collected by query id on the
raw elements (slixmpp's own iterator swallows IQ errors, which would turn
a failed query into a silently short list). Errors propagate as slixmpp's
`IqError` (``item-not-found``: the archive no longer holds ``after``) and
`IqTimeout`.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

__all__ = ["ArchivePage", "ArchivedMessage", "query_page"]

MAM_NS = "urn:xmpp:mam:2"
_RESULT = f"{{{MAM_NS}}}result"
_FORWARDED = "{urn:xmpp:forward:0}forwarded"
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    """One archived message: the archive's id for it and the message element."""

    archive_id: str | None
    message: ET.Element


@dataclass(frozen=True, slots=True)
class ArchivePage:
    """A page of results, oldest first; ``complete`` when the archive has no more."""

    messages: list[ArchivedMessage]
    complete: bool


async def query_page(
    client: Any,
    room: str,
    *,
    timeout: float,
    page_size: int = 50,
    after: str | None = None,
    before: str | None = None,
    start: datetime | None = None,
) -> ArchivePage:
    """One page of `room`'s archive after `after` (or from `start`), or before `before`
    (``""``: the last page). Needs slixmpp's xep_0313 and xep_0059 plugins."""
    iq = client.make_iq_set(ito=slixmpp.JID(room))
    query_id = f"xmlrc-mam-{next(_ids)}"
    iq["mam"]["queryid"] = query_id
    if start is not None:
        iq["mam"]["start"] = start
    iq["mam"]["rsm"]["max"] = str(page_size)
    if after is not None:
        iq["mam"]["rsm"]["after"] = after
    if before is not None:
        iq["mam"]["rsm"]["before"] = before
    found: list[ArchivedMessage] = []

    def on_result(message: Any) -> None:
        result = message.xml.find(_RESULT)
        if result is None or result.get("queryid") != query_id:
            return
        if str(message["from"].bare) != room:
            return  # only the room's own archive speaks for the room
        forwarded = result.find(_FORWARDED)
        if forwarded is None:
            return
        for inner in forwarded:
            if inner.tag.endswith("}message"):
                found.append(ArchivedMessage(result.get("id"), inner))
                break

    matcher = MatchXPath(f"{{{client.default_ns}}}message/{_RESULT}")
    client.register_handler(Callback(query_id, matcher, on_result))
    try:
        reply = await iq.send(timeout=timeout)
    finally:
        client.remove_handler(query_id)
    complete = reply["mam_fin"]["complete"] in ("true", "1", True)
    return ArchivePage(found, complete)
