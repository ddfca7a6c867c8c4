"""Routing is pure: a change to the bare JIDs of its rooms, never outside the service."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from udp2xmpp.route import Router, RoutingError
from xmlrc.wire import RecentChange


def change(wiki: str) -> RecentChange:
    return RecentChange(wiki=wiki, type="edit", ns=0, title="T", timestamp=datetime.now(UTC))


def test_room_from_template_is_lower_cased() -> None:
    router = Router("conference.example.org", "rc-{wiki}")
    (room,) = router.rooms_for(change("enWiki"))
    assert room.jid == "rc-enwiki@conference.example.org"
    assert room.title == "enWiki" and room.description == "Recent changes of enWiki, from xmlrc"


@pytest.mark.parametrize("template", ["{wiki}@evil.org", "{wiki}/res", "a b {wiki}"])
def test_templates_that_would_escape_the_service_are_refused(template: str) -> None:
    with pytest.raises(RoutingError):
        Router("conference.example.org", template).rooms_for(change("enwiki"))
