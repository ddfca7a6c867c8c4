"""Readers trust only the bridge (issue 11), against real Prosody.

Forgers post well-formed ``<rc>`` payloads with the stable ids of real
changes: in a room they created, under the bridge's nick while the bridge
is away, as the owner of a non-anonymous room of their own. The reader
must drop (and count) every forgery, live and from the archive, keep
delivering the real changes of the bridge's room, refuse or warn about
rooms that are not moderated, and survive a stored value that overflows.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest

from harness.prosody import ProsodyServer
from rcclient import RCClientError
from tests.rcclient.rooms import (
    MODERATED,
    NON_ANONYMOUS,
    PASSWORDS,
    UNMODERATED,
    Collector,
    occupant,
    overflowing,
    payload,
    reader,
    wait_for,
)
from tests.rcclient.util import change
from xmlrc.xmpp import muc


def room(prosody: ProsodyServer, name: str) -> str:
    return f"{name}@{prosody.muc_domain}"


async def test_forged_ids_in_one_room_do_not_hide_the_real_changes_of_another(
    prosody: ProsodyServer,
) -> None:
    real, forged = room(prosody, "trust-real"), room(prosody, "trust-forged")
    wiki = "trustwiki"
    fakes = [payload(change(wiki, n, title=f"FORGED {n}")) for n in (1, 2, 3)]
    reals = [payload(change(wiki, n)) for n in (1, 2, 3)]
    async with (
        occupant(prosody, "rcbot", real, "rcbot", config=MODERATED) as publisher,
        # The intruder's own room: it is its owner, and nobody moderates it.
        occupant(prosody, "intruder", forged, "intruder", config=UNMODERATED) as forger,
    ):
        live = reader(prosody, [forged, real], require_moderated=False)
        async with live, Collector(live) as seen:
            assert live.unmoderated == {forged}
            await forger.post(*fakes)  # first: with one shared memory they hid the real ones
            await wait_for(lambda: live.forged == 3, 20, "three forgeries dropped")
            await publisher.post(*reals)
            await seen.wait_count(3)
            await asyncio.sleep(0.3)  # anything extra would show up now
        # A later reader catches up from both archives: the same rules hold there.
        later = reader(prosody, [forged, real], require_moderated=False, since=timedelta(hours=1))
        async with later, Collector(later) as replayed:
            await replayed.wait_count(3)
            await asyncio.sleep(0.3)
    expected = [(real, f"{wiki}/{n}", f"Page {n}") for n in (1, 2, 3)]
    assert seen.seen() == expected
    assert (live.forged, live.duplicates, live.decode_errors) == (3, 0, 0)
    assert replayed.seen() == expected
    assert all(d.replayed for d in replayed.deliveries)
    assert later.forged == 3


async def test_a_room_that_is_not_moderated_is_refused_by_default(
    prosody: ProsodyServer,
) -> None:
    open_room = room(prosody, "trust-open")
    async with occupant(prosody, "intruder", open_room, "intruder", config=UNMODERATED):
        client = reader(prosody, [open_room])
        with pytest.raises(RCClientError, match=rf"^{open_room} is not moderated: "):
            await client.connect()
        assert not client.connected


async def test_the_bridge_nick_taken_by_a_non_owner_is_not_believed(
    prosody: ProsodyServer,
) -> None:
    wiki = "ownerwiki"
    target = room(prosody, "trust-owner")
    # The bridge's account made the room (it owns it) and left; the room is not
    # moderated, so a stranger who takes the nick has a voice.
    async with occupant(prosody, "rcbot", target, "rcbot", config=UNMODERATED):
        pass
    client = reader(prosody, [target], require_moderated=False)
    async with client, Collector(client) as seen:
        async with occupant(prosody, "intruder", target, "rcbot") as impostor:
            assert impostor.occupancy.affiliation == "none"
            await impostor.post(*(payload(change(wiki, n, title="FORGED")) for n in (1, 2)))
            await wait_for(lambda: client.forged == 2, 20, "two forgeries dropped")
        async with occupant(prosody, "rcbot", target, "rcbot") as owner:
            await owner.post(payload(change(wiki, 1)))  # the real change 1, same stable id
            await seen.wait_count(1)
            await asyncio.sleep(0.3)
    assert seen.seen() == [(target, f"{wiki}/1", "Page 1")]
    assert client.forged == 2


async def test_publisher_jid_is_checked_where_the_room_shows_real_jids(
    prosody: ProsodyServer,
) -> None:
    wiki = "jidwiki"
    real, fake = room(prosody, "trust-jid-real"), room(prosody, "trust-jid-fake")
    options = {"publisher_jid": prosody.jid("rcbot")}
    async with (
        occupant(prosody, "rcbot", real, "rcbot", config=NON_ANONYMOUS) as publisher,
        # Owner, moderated, the bridge's nick: only its real JID gives it away.
        occupant(prosody, "intruder", fake, "rcbot", config=NON_ANONYMOUS) as forger,
    ):
        live = reader(prosody, [fake, real], **options)
        async with live, Collector(live) as seen:
            await forger.post(payload(change(wiki, 1, title="FORGED")))
            await wait_for(lambda: live.forged == 1, 20, "the forgery dropped")
            await publisher.post(payload(change(wiki, 1)))
            await seen.wait_count(1)
        # The archive of a non-anonymous room records the sender: checked there too.
        later = reader(prosody, [fake, real], since=timedelta(hours=1), **options)
        async with later, Collector(later) as replayed:
            await replayed.wait_count(1)
            await asyncio.sleep(0.3)
    assert seen.seen() == [(real, f"{wiki}/1", "Page 1")]
    assert replayed.seen() == [(real, f"{wiki}/1", "Page 1")]
    assert (live.forged, later.forged) == (1, 1)


async def test_a_bridge_pairs_readers_name_both_accounts(
    prosody: ProsodyServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A take-over in a non-anonymous room: rcbot publishes and dies; rcbot2, the other
    # bridge (an owner too), takes the publisher's nick and goes on. A reader naming
    # both accounts believes both; one naming only rcbot refuses rcbot2, live and in
    # catch-up, and says which accounts it expected.
    prosody.add_user("rcbot2", PASSWORDS["rcbot2"])
    wiki = "pairjidwiki"
    target = room(prosody, "trust-jid-pair")
    first, second = prosody.jid("rcbot"), prosody.jid("rcbot2")
    both = {"publisher_jid": [second, first.upper()]}  # any order, any case
    only_first = {"publisher_jid": [first]}
    async with occupant(prosody, "rcbot", target, "rcbot", config=NON_ANONYMOUS) as publisher:
        await muc.set_affiliation(publisher.session.client, target, second, "owner", timeout=20)
        pair, single = reader(prosody, [target], **both), reader(prosody, [target], **only_first)
        async with pair, single, Collector(pair) as seen, Collector(single) as seen_single:
            await publisher.post(payload(change(wiki, 1)))
            await seen.wait_count(1)
            await seen_single.wait_count(1)
            await publisher.session.stop()  # the publisher dies; the nick is free
            async with occupant(prosody, "rcbot2", target, "rcbot") as successor:
                assert successor.occupancy.affiliation == "owner"
                await successor.post(payload(change(wiki, 2)))
                await seen.wait_count(2)
                await wait_for(lambda: single.forged == 1, 20, "rcbot2's change refused")
                await asyncio.sleep(0.3)
                # Later readers catch up from the archive, which records the real JIDs.
                later_pair = reader(prosody, [target], since=timedelta(hours=1), **both)
                later_single = reader(prosody, [target], since=timedelta(hours=1), **only_first)
                async with (
                    later_pair,
                    later_single,
                    Collector(later_pair) as replayed,
                    Collector(later_single) as replayed_single,
                ):
                    await replayed.wait_count(2)
                    await replayed_single.wait_count(1)
                    await wait_for(lambda: later_single.forged == 1, 20, "refused in catch-up")
                    await asyncio.sleep(0.3)
    both_changes = [(target, f"{wiki}/1", "Page 1"), (target, f"{wiki}/2", "Page 2")]
    assert seen.seen() == replayed.seen() == both_changes
    assert seen_single.seen() == replayed_single.seen() == both_changes[:1]
    assert (pair.forged, later_pair.forged, single.forged, later_single.forged) == (0, 0, 1, 1)
    assert pair.publisher_jids == {first, second}
    refusal = f"dropped a change in {target}: sent by 'rcbot' as {second}, not as {first}"
    assert caplog.text.count(refusal) == 2  # live and in catch-up


async def test_an_overflowing_timestamp_is_a_decode_error_live_and_in_catch_up(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wiki = "overflowwiki"
    target = room(prosody, "trust-overflow")
    async with occupant(prosody, "rcbot", target, "rcbot", config=MODERATED) as publisher:
        await publisher.post(overflowing(change(wiki, 1)), payload(change(wiki, 2)))
        client = reader(prosody, [target], since=timedelta(hours=1), state_file=tmp_path / "s")
        async with client, Collector(client) as seen:
            await seen.wait_count(1)  # from the archive: the bad one skipped, not fatal
            assert client.decode_errors == 1
            await publisher.post(overflowing(change(wiki, 3)), payload(change(wiki, 4)))
            await seen.wait_count(2)
            await asyncio.sleep(0.3)
    assert [(d.change.rcid, d.replayed) for d in seen.deliveries] == [(2, True), (4, False)]
    assert client.decode_errors == 2
    assert client.connections == 1  # the bad value never cost the session


async def test_saved_recent_ids_of_one_room_do_not_hide_another_rooms_changes(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wiki = "staterecentwiki"
    first, second = room(prosody, "trust-state-a"), room(prosody, "trust-state-b")
    state = tmp_path / "state.json"
    # A previous run handed out staterecentwiki/1 from the first room (a forger's room,
    # say): that must not stop the same id from being handed out from the second.
    state.write_text(
        json.dumps({"version": 1, "rooms": {first: {"archive_id": None, "recent": [f"{wiki}/1"]}}})
    )
    async with (
        occupant(prosody, "rcbot", first, "rcbot", config=MODERATED) as one,
        occupant(prosody, "rcbot", second, "rcbot", config=MODERATED) as other,
    ):
        client = reader(prosody, [first, second], state_file=state)
        async with client, Collector(client) as seen:
            await one.post(payload(change(wiki, 1)))  # already handed out from this room
            await other.post(payload(change(wiki, 1)))
            await seen.wait_count(1)
            await asyncio.sleep(0.3)
    assert seen.seen() == [(second, f"{wiki}/1", "Page 1")]
    assert client.duplicates == 1
    saved = json.loads(state.read_text())["rooms"]
    assert saved[second]["recent"] == [f"{wiki}/1"]
