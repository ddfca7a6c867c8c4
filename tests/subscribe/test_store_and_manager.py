"""The SQLite store (schema, migrations, lock) and the watch logic, without XMPP."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from udp2xmpp.config import SubscriptionSettings
from udp2xmpp.subscribe.manager import WatchManager, WikiAccess
from udp2xmpp.subscribe.model import Target
from udp2xmpp.subscribe.store import (
    SCHEMA_VERSION,
    StoreError,
    StoreLockedError,
    SubscriptionStore,
)

from .helpers import FakeClock, change

ALICE = "alice@example.org"


def settings(**values: object) -> SubscriptionSettings:
    return SubscriptionSettings(enabled=True, database="unused", **values)  # type: ignore[arg-type]


def access(wiki: str) -> WikiAccess:
    if wiki == "officewiki":
        return WikiAccess(members=frozenset({"boss@example.org"}))
    if wiki == "nowiki":
        return WikiAccess(False)
    return WikiAccess()


@pytest.fixture
def store(tmp_path: Path) -> SubscriptionStore:
    return SubscriptionStore.open(tmp_path / "subs.sqlite")


def manager(
    store: SubscriptionStore, clock: FakeClock | None = None, **values: object
) -> WatchManager:
    return WatchManager(settings(**values), store, access, clock=clock or FakeClock())


# -- the store --------------------------------------------------------------------------


def test_subscriptions_and_mutes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "subs.sqlite"  # its folder is made
    store = SubscriptionStore.open(path)
    page = store.add(ALICE, Target("page", "enwiki", "sandbox"), 1.5)
    assert page is not None and page.id > 0
    assert store.add(ALICE, Target("page", "enwiki", "Sandbox"), 2.0) is None  # the same page
    flt = store.add(ALICE, Target("filter", "enwiki", "", (0, 1), "List of *", 500), 3.0)
    user = store.add("bob@example.org", Target("user", "enwiki", "Carol"), 4.0)
    store.set_mute(ALICE, 99.0)
    salt = store.secret()
    store.close()

    again = SubscriptionStore.open(path)
    assert again.load() == [page, flt, user]
    assert again.mutes() == {ALICE: 99.0}
    assert again.secret() == salt  # hashed JIDs in logs stay comparable across restarts
    assert again.schema_version() == SCHEMA_VERSION
    again.remove_jid(ALICE)
    assert again.load() == [user] and again.mutes() == {}
    again.close()


def test_one_bridge_per_database(tmp_path: Path) -> None:
    path = tmp_path / "subs.sqlite"
    first = SubscriptionStore.open(path)
    with pytest.raises(StoreLockedError) as locked:
        SubscriptionStore.open(path)
    message = str(locked.value)
    assert "in use by another udp2xmpp" in message and str(path) in message
    import os

    assert f"pid {os.getpid()}" in message
    first.close()
    SubscriptionStore.open(path).close()  # free again once closed


def test_a_newer_schema_is_refused_and_the_lock_released(tmp_path: Path) -> None:
    path = tmp_path / "subs.sqlite"
    SubscriptionStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this udp2xmpp knows"):
        SubscriptionStore.open(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    SubscriptionStore.open(path).close()  # the failed open left no lock behind


def test_an_old_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "subs.sqlite"
    with sqlite3.connect(path) as db:  # a file from before the schema had a version
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    store = SubscriptionStore.open(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.add(ALICE, Target("page", "w", "P"), 0.0) is not None
    store.close()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "subs.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        SubscriptionStore.open(path)


# -- commands ----------------------------------------------------------------------------


def test_watch_list_unwatch_round(store: SubscriptionStore) -> None:
    watch = manager(store)
    assert watch.handle_text(ALICE, "list") == (
        "You watch nothing. Try: watch WIKI TITLE (help: all commands)"
    )
    assert watch.handle_text(ALICE, "watch enwiki Sandbox") == (
        "OK, watching [[Sandbox]] on enwiki. (list: what you watch; unwatch enwiki Sandbox: stop)"
    )
    assert (
        watch.handle_text(ALICE, "watch enwiki sandbox")
        == "You already watch [[sandbox]] on enwiki."
    )
    watch.handle_text(ALICE, "watchuser enwiki carol")
    watch.handle_text(ALICE, "watchfilter enwiki ns=0 min=500")
    assert watch.handle_text(ALICE, "list") == (
        "You watch 3 things:\n"
        "1. [[Sandbox]] on enwiki\n"
        "2. edits by Carol on enwiki\n"
        "3. changes on enwiki with ns=0 min=500"
    )
    assert watch.handle_text(ALICE, "unwatch 3") == (
        "Stopped watching changes on enwiki with ns=0 min=500."
    )
    assert watch.handle_text(ALICE, "unwatch 3") == "There is no number 3: you watch 2 things."
    assert (
        watch.handle_text(ALICE, "unwatch enwiki sandbox")
        == "Stopped watching [[Sandbox]] on enwiki."
    )
    assert watch.handle_text(ALICE, "unwatch enwiki Sandbox").startswith("You do not watch")
    assert watch.handle_text(ALICE, "unwatch all") == "Stopped watching all 1 thing."
    assert watch.handle_text(ALICE, "unwatch all") == "You watch nothing."
    assert store.load() == []
    assert watch.handle_text(ALICE, "help watch").startswith("watch WIKI TITLE")
    assert watch.handle_text(ALICE, "frob").startswith("Unknown command 'frob'.")
    assert watch.stats.commands == 14 and watch.stats.command_errors == 1


def test_caps_private_wikis_and_allowed_domains(store: SubscriptionStore) -> None:
    watch = manager(store, max_per_user=3, max_filters_per_user=1, max_per_domain=4)
    assert watch.handle_text(ALICE, "watch officewiki Plans") == (
        "officewiki is not a wiki you can watch here."
    )
    assert watch.handle_text("boss@example.org", "watch officewiki Plans").startswith("OK")
    assert watch.handle_text(ALICE, "watch nowiki P") == "nowiki is not a wiki you can watch here."
    assert watch.handle_text(ALICE, "watchfilter w min=1").startswith("OK")
    assert watch.handle_text(ALICE, "watchfilter w min=2") == (
        "You have 1 filters, the most allowed: unwatch one first."
    )
    assert watch.handle_text(ALICE, "watch w A").startswith("OK")
    assert watch.handle_text(ALICE, "watch w B").startswith("OK")
    assert watch.handle_text(ALICE, "watch w C") == (
        "You watch 3 things, the most allowed: unwatch something first."
    )
    assert watch.handle_text("carol@example.org", "watch w C") == (
        "Too many subscriptions from example.org already; try again later."
    )
    assert watch.handle_text("carol@other.org", "watch w C").startswith("OK")
    closed = manager(store, allow_domains=("example.org",))
    assert closed.handle_text("dave@evil.example", "watch w C") == (
        "Sorry: users of evil.example cannot subscribe here."
    )
    crowded = manager(store, max_filters_per_wiki=1)  # w has one filter already
    assert crowded.handle_text("fay@other.org", "watchfilter w min=9") == (
        "w has all the filters it may have; watch pages or users."
    )
    full = manager(store, max_total=5)
    assert full.handle_text("erin@third.org", "watch w C") == (
        "This bridge takes no more subscriptions for now, sorry."
    )


def test_matching_mutes_and_private_wikis(store: SubscriptionStore) -> None:
    clock = FakeClock()
    watch = manager(store, clock)
    watch.handle_text(ALICE, "watch w Sandbox")
    watch.handle_text("bob@example.org", "watchuser w Alice")
    edit = change("Sandbox", wiki="w", user="Alice")
    assert watch.on_change(edit) == [(ALICE, edit), ("bob@example.org", edit)]
    assert watch.on_change(change("Other", wiki="w", user="Zed")) == []
    assert watch.handle_text(ALICE, "mute 1h").startswith("Muted until 2027-01-15 09:00 UTC.")
    assert watch.on_change(edit) == [("bob@example.org", edit)]
    assert watch.stats.muted == 1
    assert watch.handle_text(ALICE, "list").endswith("Muted until 2027-01-15 09:00 UTC.")
    clock.now += 3601
    assert watch.on_change(edit) == [(ALICE, edit), ("bob@example.org", edit)]
    watch.handle_text(ALICE, "mute 1d")
    assert watch.handle_text(ALICE, "unmute") == "Notifications are on."
    assert len(watch.on_change(edit)) == 2
    # A member dropped from a private wiki's list no longer gets its changes.
    watch.handle_text("boss@example.org", "watch officewiki Plans")
    store.add("exboss@example.org", Target("page", "officewiki", "Plans"), 0.0)
    reloaded = manager(store, clock)
    private = change("Plans", wiki="officewiki")
    assert reloaded.on_change(private) == [("boss@example.org", private)]
    assert reloaded.stats.not_member == 1


def test_bounces_remove_a_jid_and_logs_do_not_name_it(
    store: SubscriptionStore, caplog: pytest.LogCaptureFixture
) -> None:
    watch = manager(store, bounce_limit=3)
    watch.handle_text("ghost@example.org", "watch w Sandbox")
    watch.handle_text(ALICE, "watch w Sandbox")
    caplog.set_level(logging.INFO, logger="udp2xmpp.subscribe")
    assert not watch.on_bounce("ghost@example.org", "service-unavailable")
    assert not watch.on_bounce("ghost@example.org", "resource-constraint")  # not "gone"
    assert not watch.on_bounce("stranger@example.org", "service-unavailable")  # not a watcher
    watch.handle_text("ghost@example.org", "list")  # a sign of life: starts over
    assert not watch.on_bounce("ghost@example.org", "service-unavailable")
    assert not watch.on_bounce("ghost@example.org", "remote-server-not-found")
    assert watch.on_bounce("ghost@example.org", "service-unavailable")
    assert [s.jid for s in store.load()] == [ALICE]
    assert watch.index.of("ghost@example.org") == []
    assert (watch.stats.bounces, watch.stats.removed_bounced, watch.stats.jids_removed_bounced) == (
        4,
        1,
        1,
    )
    (record,) = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert record.getMessage() == (
        f"removed 1 subscription(s) of {watch.jid_tag('ghost@example.org')}: "
        "3 notifications in a row bounced (service-unavailable)"
    )
    assert "ghost" not in caplog.text and "Sandbox" not in caplog.text


def test_commands_are_rate_limited_per_jid(store: SubscriptionStore) -> None:
    clock = FakeClock()
    watch = manager(store, clock, command_rate_per_minute=60, command_burst=2, command_penalty=30)
    assert [watch.admit_command(ALICE) for _ in range(2)] == ["", ""]
    assert watch.admit_command(ALICE) == "Too many commands: I will ignore yours for 30 seconds."
    assert watch.admit_command(ALICE) is None  # in the penalty box: silence
    assert watch.admit_command("bob@example.org") == ""  # others are not affected
    clock.now += 31
    assert watch.admit_command(ALICE) == ""
    assert watch.stats.commands_limited == 2
