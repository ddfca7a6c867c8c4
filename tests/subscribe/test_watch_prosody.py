"""Personal watch against real Prosody, with the bridge in-process.

A person watches a page by chat and by ad-hoc command; a matching edit
arrives as a direct message, another edit does not; over the rate limit
changes come as one digest; a JID that does not exist is dropped after its
notifications bounce; subscriptions outlive the bridge, and a second bridge
cannot open the same database. Logs at info never name a watcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config
from udp2xmpp.bridge import Bridge
from udp2xmpp.config import BridgeConfig
from udp2xmpp.subscribe import StoreLockedError
from udp2xmpp.subscribe.model import Target
from udp2xmpp.subscribe.store import SubscriptionStore
from xmlrc.wire import change_from_element, change_to_line
from xmlrc.wire.rcxml import RC_TAG
from xmlrc_emitter import AsyncEmitter, RecentChange

from .helpers import Person, change, started, until

COMMANDS = "http://jabber.org/protocol/commands"


def watch_config(
    prosody: ProsodyServer,
    tmp_path: Path,
    wiki: str,
    wikis: dict[str, Any] | None = None,
    **values: Any,
) -> BridgeConfig:
    subscriptions = {"enabled": True, "database": str(tmp_path / "subs.sqlite"), **values}
    sections: dict[str, Any] = {"rooms": {"wikis": [wiki]}, "subscriptions": subscriptions}
    if wikis:
        sections["wikis"] = wikis
    return bridge_config(prosody, **sections)


async def send(bridge: Bridge, *changes: RecentChange) -> None:
    emitter = AsyncEmitter(*bridge.addresses[0])
    try:
        for item in changes:
            await emitter.send(item)
    finally:
        emitter.close()
    expected = bridge.stats.accepted + len(changes)
    await until(lambda: bridge.stats.accepted >= expected, what="the bridge to take the changes")


def metrics(bridge: Bridge) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(bridge.metrics).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def info_lines(caplog: pytest.LogCaptureFixture) -> str:
    """The bridge's log at info and above (the people's own clients log in this process too)."""
    return "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith("udp2xmpp")
    )


async def test_a_person_watches_a_page_by_chat(
    people: ProsodyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bridge = await started(watch_config(people, tmp_path, "chatwiki"))
    bot = people.jid("rcbot")
    try:
        async with Person(people, "alice", "alicepass") as alice:
            assert await alice.ask(bot, "watch chatwiki sandbox") == (
                "OK, watching [[sandbox]] on chatwiki. "
                "(list: what you watch; unwatch chatwiki sandbox: stop)"
            )
            assert (await alice.ask(bot, "whatch chatwiki sandbox")).startswith(
                "Unknown command 'whatch'. Commands:\nwatch WIKI TITLE:"
            )
            assert await alice.ask(bot, "watch chatwiki") == (
                "A page title is needed after the wiki. Usage: watch WIKI TITLE: "
                "tell me when the page changes (watch enwiki Main Page)"
            )
            other, edit = (
                change("Other page", 1, wiki="chatwiki"),
                change("Sandbox", 2, wiki="chatwiki"),
            )
            await send(bridge, other, edit)
            message = await alice.next()
            assert message["from"].bare == bot and message["type"] == "chat"
            assert message["body"] == f"chatwiki: {change_to_line(edit)}\n{edit.diff_url}"
            assert edit.diff_url == "https://test.example.org/w/index.php?diff=1002&oldid=1001"
            assert change_from_element(message.xml.find(RC_TAG)) == edit
            assert await alice.quiet() == []  # not the other page

            assert await alice.ask(bot, "unwatch chatwiki Sandbox") == (
                "Stopped watching [[sandbox]] on chatwiki."
            )
            await send(bridge, change("Sandbox", 3, wiki="chatwiki"))
            assert await alice.quiet() == []
    finally:
        await bridge.stop()
    logged = info_lines(caplog).lower()
    assert "alice" not in logged and "sandbox" not in logged  # privacy: not at info level


async def test_a_person_watches_by_ad_hoc_command(people: ProsodyServer, tmp_path: Path) -> None:
    private = {"hushwiki": {"members_only": True, "members": ["carol@localhost"]}}
    bridge = await started(watch_config(people, tmp_path, "adhocwiki", wikis=private))
    try:
        async with Person(people, "bob", "bobpass") as bob:
            adhoc = bob.client.plugin["xep_0050"]
            forms = bob.client.plugin["xep_0004"]
            bridge_jid = bridge.session.client.boundjid.full  # clients learn it from presence
            items = await bob.client.plugin["xep_0030"].get_items(
                jid=bridge_jid, node=COMMANDS, timeout=10
            )
            nodes = {item[1]: item[2] for item in items["disco_items"]["items"]}
            assert nodes == {
                "watch": "Watch a page, a user or a filter",
                "unwatch": "Stop watching",
                "list": "What I watch",
                "mute": "Mute notifications for a while",
            }

            opened = await adhoc.send_command(bridge_jid, "watch", timeout=10)
            assert opened["command"]["status"] == "executing"
            fields = opened["command"]["form"].get_fields()
            assert set(fields) >= {"kind", "wiki", "name"}
            assert fields["wiki"]["desc"] == "Known: adhocwiki"  # not the private hushwiki
            form = forms.make_form(ftype="submit")
            form.add_field(var="kind", value="page")
            form.add_field(var="wiki", value="adhocwiki")
            form.add_field(var="name", value="Main Page")
            done = await adhoc.send_command(
                bridge_jid, "watch", action="complete", payload=form,
                sessionid=opened["command"]["sessionid"], timeout=10,
            )  # fmt: skip
            assert done["command"]["status"] == "completed"
            assert done["command"]["notes"] == [
                ("info", "OK, watching [[Main Page]] on adhocwiki. "
                 "(list: what you watch; unwatch adhocwiki Main Page: stop)")
            ]  # fmt: skip
            listed = await adhoc.send_command(bridge_jid, "list", timeout=10)
            assert listed["command"]["notes"] == [
                ("info", "You watch 1 thing:\n1. [[Main Page]] on adhocwiki")
            ]

            edit = change("Main Page", 1, wiki="adhocwiki", user="Carol")
            await send(bridge, change("Main Page", 2, wiki="otherwiki"), edit)
            message = await bob.next()
            assert change_from_element(message.xml.find(RC_TAG)) == edit
            assert await bob.quiet() == []  # the same title on another wiki is not watched

            opened = await adhoc.send_command(bridge_jid, "unwatch", timeout=10)
            (option,) = opened["command"]["form"].get_fields()["items"]["options"]
            assert option["label"] == "[[Main Page]] on adhocwiki"
            form = forms.make_form(ftype="submit")
            form.add_field(var="items", ftype="list-multi", value=[option["value"]])
            done = await adhoc.send_command(
                bridge_jid, "unwatch", action="complete", payload=form,
                sessionid=opened["command"]["sessionid"], timeout=10,
            )  # fmt: skip
            assert done["command"]["notes"] == [
                ("info", "Stopped watching [[Main Page]] on adhocwiki.")
            ]
        assert len(bridge.subscriptions.manager.index) == 0  # type: ignore[union-attr]
    finally:
        await bridge.stop()


async def test_over_the_rate_limit_changes_come_as_one_digest(
    people: ProsodyServer, tmp_path: Path
) -> None:
    config = watch_config(
        people, tmp_path, "busywiki", rate_per_minute=1, burst=2, digest_interval=1.0
    )
    bridge = await started(config)
    bot = people.jid("rcbot")
    try:
        async with Person(people, "alice", "alicepass") as alice:
            assert (await alice.ask(bot, "watch busywiki Busy page")).startswith("OK")
            edits = [change("Busy page", n, wiki="busywiki") for n in range(1, 7)]
            await send(bridge, *edits)
            first, second = await alice.next(), await alice.next()
            assert [change_from_element(m.xml.find(RC_TAG)) for m in (first, second)] == edits[:2]
            digest = await alice.next(timeout=15)
            lines = str(digest["body"]).splitlines()
            assert lines[0].startswith("Digest: 4 changes you watch since ")
            assert lines[1:] == [
                f"- busywiki: [[Busy page]] by Alice (+7) {e.diff_url}" for e in edits[2:]
            ]
            payloads = digest.xml.findall(f"{{urn:xmlrc:digest:1}}digest/{RC_TAG}")
            assert [change_from_element(p) for p in payloads] == edits[2:]
            assert await alice.quiet() == []
        counted = metrics(bridge)
        assert counted[("udp2xmpp_watch_notifications_total", ())] == 2
        assert counted[("udp2xmpp_watch_digests_total", ())] == 1
        assert counted[("udp2xmpp_watch_digested_total", ())] == 4
    finally:
        await bridge.stop()


async def test_subscriptions_of_jids_that_bounce_are_removed(
    people: ProsodyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = watch_config(people, tmp_path, "bouncewiki", bounce_limit=2)
    store = SubscriptionStore.open(config.subscriptions.database or "")
    page = Target("page", "bouncewiki", "Sandbox")
    for jid in ("ghost@localhost", "nobody@nonexistent.invalid", people.jid("alice")):
        store.add(jid, page, 0.0)  # the first has no account, the second no server
    store.close()
    bridge = await started(config)
    manager = bridge.subscriptions.manager  # type: ignore[union-attr]
    assert manager is not None
    try:
        async with Person(people, "alice", "alicepass") as alice:
            await send(bridge, *(change("Sandbox", n, wiki="bouncewiki") for n in range(1, 4)))
            await until(lambda: manager.index.jids == 1, what="the bouncing JIDs to go")
            got = [await alice.next() for _ in range(3)]  # the live one keeps getting them
            assert [change_from_element(m.xml.find(RC_TAG)).rcid for m in got] == [1, 2, 3]
        counted = metrics(bridge)
        assert counted[("udp2xmpp_watch_removed_total", (("reason", "bounced"),))] == 2
        assert counted[("udp2xmpp_watch_jids_removed_total", ())] == 2
        assert counted[("udp2xmpp_watch_subscriptions", ())] == 1
    finally:
        await bridge.stop()
    reopened = SubscriptionStore.open(config.subscriptions.database or "")
    assert [sub.jid for sub in reopened.load()] == [people.jid("alice")]
    reopened.close()
    logged = info_lines(caplog)
    assert logged.count("notifications in a row bounced") == 2
    assert "ghost" not in logged and "nobody" not in logged and "alice" not in logged


async def test_subscriptions_outlive_the_bridge_and_a_second_bridge_is_refused(
    people: ProsodyServer, tmp_path: Path
) -> None:
    config = watch_config(people, tmp_path, "keepwiki")
    bot = people.jid("rcbot")
    async with Person(people, "alice", "alicepass") as alice:
        first = await started(config)
        try:
            assert (await alice.ask(bot, "watch keepwiki Sandbox")).startswith("OK")
            assert (await alice.ask(bot, "watchuser keepwiki Carol")).startswith("OK")
            second = Bridge(config)
            with pytest.raises(StoreLockedError, match="in use by another udp2xmpp"):
                await second.start()
            await second.stop(drain_timeout=0)
            assert not second.sink.online  # it never connected
        finally:
            await first.stop()

        again = await started(config)
        try:
            assert await alice.ask(bot, "list") == (
                "You watch 2 things:\n1. [[Sandbox]] on keepwiki\n2. edits by Carol on keepwiki"
            )
            edit = change("Sandbox", 1, wiki="keepwiki")
            await send(again, edit)
            assert change_from_element((await alice.next()).xml.find(RC_TAG)) == edit
        finally:
            await again.stop()


async def test_component_mode_takes_commands_at_bridge_at_the_component(
    people: ProsodyServer, tmp_path: Path
) -> None:
    config = bridge_config(
        people,
        xmpp={"mode": "component", "jid": people.component_domain,
              "password": people.component_secret, "port": people.component_port},
        rooms={"wikis": ["compwatchwiki"]},
        subscriptions={"enabled": True, "database": str(tmp_path / "subs.sqlite")},
    )  # fmt: skip
    bridge = await started(config)
    bot = f"bridge@{people.component_domain}"
    try:
        async with Person(people, "alice", "alicepass") as alice:
            assert (await alice.ask(bot, "watch compwatchwiki Sandbox")).startswith("OK")
            listed = await alice.client.plugin["xep_0050"].send_command(bot, "list", timeout=10)
            assert listed["command"]["notes"] == [
                ("info", "You watch 1 thing:\n1. [[Sandbox]] on compwatchwiki")
            ]
            edit = change("Sandbox", 1, wiki="compwatchwiki")
            await send(bridge, edit)
            message = await alice.next()
            assert str(message["from"]) == bot
            assert change_from_element(message.xml.find(RC_TAG)) == edit
    finally:
        await bridge.stop()


async def test_nothing_is_sent_while_muted(people: ProsodyServer, tmp_path: Path) -> None:
    bridge = await started(watch_config(people, tmp_path, "mutewiki"))
    bot = people.jid("rcbot")
    try:
        async with Person(people, "alice", "alicepass") as alice:
            assert (await alice.ask(bot, "watch mutewiki Sandbox")).startswith("OK")
            assert (await alice.ask(bot, "mute 2h")).startswith("Muted until ")
            await send(bridge, change("Sandbox", 1, wiki="mutewiki"))
            assert await alice.quiet() == []
            assert await alice.ask(bot, "unmute") == "Notifications are on."
            edit = change("Sandbox", 2, wiki="mutewiki")
            await send(bridge, edit)
            assert change_from_element((await alice.next()).xml.find(RC_TAG)) == edit
    finally:
        await bridge.stop()
    await asyncio.sleep(0)


# -- the README's transcript ----------------------------------------------------------------

README = Path(__file__).parents[2] / "README.md"
START, END = "<!-- watch-transcript:start -->", "<!-- watch-transcript:end -->"


def transcript_lines(who: str, text: str) -> list[str]:
    first, *rest = text.splitlines()
    return [f"{who:<7}{first}", *(f"{'':<7}{line}" for line in rest)]


async def test_the_readme_transcript_is_a_real_conversation(
    people: ProsodyServer, tmp_path: Path
) -> None:
    """Replays the README's conversation and compares, line for line. To update the README
    after changing a reply: XMLRC_WRITE_TRANSCRIPT=1 pytest -k readme_transcript."""
    bridge = await started(watch_config(people, tmp_path, "enwiki"))
    bot = people.jid("rcbot")
    lines: list[str] = []
    try:
        async with Person(people, "alice", "alicepass") as alice:
            for text in ["help", "watch enwiki sandbox", "watchuser enwiki Carol", "list"]:
                lines += transcript_lines("me:", text)
                lines += transcript_lines("rcbot:", await alice.ask(bot, text))
            edit = change(
                "Sandbox", 4242, wiki="enwiki", user="Carol", comment="/* Intro */ tidy up",
                oldlen=1804, newlen=1790, server_url="https://en.example.org",
            )  # fmt: skip
            lines.append(f"({edit.user} edits [[{edit.title}]] on {edit.wiki})")
            await send(bridge, edit)
            lines += transcript_lines("rcbot:", str((await alice.next())["body"]))
            for text in ["unwatch 2", "mute 1x", "unwatch enwiki"]:
                lines += transcript_lines("me:", text)
                lines += transcript_lines("rcbot:", await alice.ask(bot, text))
    finally:
        await bridge.stop()
    transcript = "\n".join(lines)
    readme = README.read_text(encoding="utf-8")
    before, _, rest = readme.partition(START)
    _, _, after = rest.partition(END)
    block = f"{START}\n```\n{transcript}\n```\n{END}"
    if os.environ.get("XMLRC_WRITE_TRANSCRIPT"):
        README.write_text(before + block + after, encoding="utf-8")
    assert START in readme and END in readme, "the README has no transcript markers"
    assert readme == before + block + after, f"the README's transcript differs; now:\n{transcript}"
