"""Ad-hoc forms, the stanzas a watcher gets, PubSub IQs and the config sections: pure code."""

from __future__ import annotations

import dataclasses
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import pytest

from udp2xmpp.config import ConfigError, PubSubSettings, parse_config
from udp2xmpp.effective import effective_toml
from udp2xmpp.pubsub import node_config, publish_text
from udp2xmpp.subscribe.adhoc import (
    DATA_NS,
    Session,
    Sessions,
    chosen_ids,
    command_element,
    command_from_form,
    form_values,
    unwatch_form,
    watch_form,
)
from udp2xmpp.subscribe.commands import CommandError, ListCommand, Mute, Watch
from udp2xmpp.subscribe.messages import digest_body, digest_text, notification_text
from udp2xmpp.subscribe.model import Subscription, Target
from xmlrc.wire import change_from_element

from .helpers import change

# -- ad-hoc forms --------------------------------------------------------------------------


def submitted(values: dict[str, str | list[str]]) -> ET.Element:
    command = ET.Element("{http://jabber.org/protocol/commands}command")
    form = ET.SubElement(command, f"{{{DATA_NS}}}x", {"type": "submit"})
    for var, value in values.items():
        field = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": var})
        for item in [value] if isinstance(value, str) else value:
            ET.SubElement(field, f"{{{DATA_NS}}}value").text = item
    return command


def test_forms_mean_the_same_as_chat_commands() -> None:
    def read(node: str, values: dict[str, str | list[str]]) -> object:
        found = form_values(submitted(values))
        assert found is not None
        return command_from_form(node, found)

    assert read("watch", {"kind": "page", "wiki": "enwiki", "name": "main_page"}) == Watch(
        Target("page", "enwiki", "main page")
    )
    assert read("watch", {"kind": "user", "wiki": "enwiki", "name": "carol"}) == Watch(
        Target("user", "enwiki", "Carol")
    )
    assert read(
        "watch",
        {"kind": "filter", "wiki": "enwiki", "ns": "0, 1", "title": 'List "of" *', "min": "5"},
    ) == Watch(Target("filter", "enwiki", "", (0, 1), 'List "of" *', 5))
    assert read("mute", {"duration": "8h"}) == Mute(8 * 3600)
    assert read("mute", {"duration": "off"}) == Mute(0)
    assert read("list", {}) == ListCommand()
    for node, values in [
        ("watch", {"kind": "page", "wiki": "en wiki", "name": "X"}),
        ("watch", {"kind": "page", "wiki": "enwiki"}),
        ("watch", {"kind": "filter", "wiki": "enwiki"}),
        ("watch", {"kind": "mood", "wiki": "enwiki", "name": "X"}),
        ("mute", {"duration": "eternity"}),
        ("destroy", {}),
    ]:
        with pytest.raises(CommandError):
            read(node, values)
    assert form_values(ET.Element("command")) is None  # no submitted form


def test_the_forms_offer_what_they_read() -> None:
    form = watch_form(["enwiki", "dewiki"])
    variables = [f.get("var") for f in form.iter(f"{{{DATA_NS}}}field")]
    assert variables == ["FORM_TYPE", "kind", "wiki", "name", "ns", "title", "min"]
    subs = [
        Subscription(7, "a@x", Target("page", "w", "P")),
        Subscription(9, "a@x", Target("user", "w", "U")),
    ]
    options = [
        (o.get("label"), o.findtext(f"{{{DATA_NS}}}value"))
        for o in unwatch_form(subs).iter(f"{{{DATA_NS}}}option")
    ]
    assert options == [("[[P]] on w", "7"), ("edits by U on w", "9")]
    values = form_values(submitted({"items": ["9", "12"]}))
    assert values is not None and chosen_ids(values, (7, 9)) == [9]  # 12 was never offered
    done = command_element("watch", "s1", "completed", note=("info", "OK"))
    assert done.get("status") == "completed" and done.findtext("{*}note") == "OK"
    assert command_element("watch", "s1", "executing", form=form).find("{*}actions") is not None


def test_sessions_belong_to_their_jid_expire_and_are_bounded() -> None:
    sessions = Sessions(limit=2, ttl=10)
    sid = sessions.open(Session("a@x", "watch", 0.0))
    assert sessions.take(sid, "b@x", 1.0) is None  # not Bob's to answer
    assert sessions.take(sid, "a@x", 1.0) == Session("a@x", "watch", 0.0)
    assert sessions.take(sid, "a@x", 1.0) is None  # answered once
    old = sessions.open(Session("a@x", "watch", 0.0))
    assert sessions.take(old, "a@x", 11.0) is None  # expired
    first = sessions.open(Session("a@x", "watch", 0.0))
    sessions.open(Session("a@x", "mute", 0.0))
    sessions.open(Session("a@x", "list", 0.0))
    assert len(sessions) == 2 and sessions.take(first, "a@x", 0.0) is None


# -- messages ----------------------------------------------------------------------------


def test_a_notification_has_the_line_the_deep_link_and_the_payload() -> None:
    edit = change("Sandbox & <co>", rcid=16)
    text = notification_text(edit, "alice@example.org", "xmlrc-w1")
    message = SafeET.fromstring(text)
    assert message.attrib == {"to": "alice@example.org", "type": "chat", "id": "xmlrc-w1"}
    assert message.findtext("body") == (
        "testwiki: [[Sandbox & <co>]]  https://test.example.org/w/index.php?diff=1016&oldid=1015"
        "&rcid=16 * Alice * (+7) fix a typo\n"
        "https://test.example.org/w/index.php?diff=1016&oldid=1015"
    )
    assert change_from_element(message.find("{urn:xmlrc:rc:1}rc")) == edit
    component = SafeET.fromstring(notification_text(edit, "a@x", "i", "bridge@rc.localhost"))
    assert component.get("from") == "bridge@rc.localhost"


def test_a_digest_lists_then_counts() -> None:
    changes = [change("A", 1), change("B", 2, oldlen=50, newlen=10)]
    body = digest_body(changes, 3, 0, since="22:31 UTC", daily_limit=100)
    assert body == (
        "Digest: 5 changes you watch since 22:31 UTC:\n"
        "- testwiki: [[A]] by Alice (+7) https://test.example.org/w/index.php?diff=1001&oldid=1000\n"
        "- testwiki: [[B]] by Alice (-40) https://test.example.org/w/index.php?diff=1002&oldid=1001\n"
        "... and 3 more."
    )
    stanza = SafeET.fromstring(digest_text(changes, body, "a@x", "xmlrc-w2"))
    payloads = stanza.findall("{urn:xmlrc:digest:1}digest/{urn:xmlrc:rc:1}rc")
    assert [change_from_element(p) for p in payloads] == changes
    limited = digest_body([], 0, 4, since="x", daily_limit=100)
    assert limited.startswith("You reached the daily limit of 100 changes: 4 or more")


# -- PubSub --------------------------------------------------------------------------------


def test_publish_iq_text() -> None:
    edit = change("Sandbox", rcid=5)
    iq = SafeET.fromstring(publish_text("pubsub.example.org", "testwiki", edit, "xmlrc-ps1"))
    assert iq.attrib == {"type": "set", "to": "pubsub.example.org", "id": "xmlrc-ps1"}
    ns = "{http://jabber.org/protocol/pubsub}"
    item = iq.find(f"{ns}pubsub/{ns}publish[@node='testwiki']/{ns}item")
    assert item is not None and item.get("id") == "testwiki/5"
    assert change_from_element(item[0]) == edit


def test_node_config_follows_the_room() -> None:
    settings = PubSubSettings(enabled=True, service="p", max_items=50, persist_items=True)
    open_node = node_config(settings, "T", "D", whitelist=False)
    assert open_node["pubsub#access_model"] == "open"
    assert open_node["pubsub#publish_model"] == "publishers"
    assert (open_node["pubsub#max_items"], open_node["pubsub#persist_items"]) == ("50", "1")
    assert node_config(settings, "T", "D", whitelist=True)["pubsub#access_model"] == "whitelist"


# -- config ------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "xmpp": {"jid": "rcbot@localhost", "password": "p"},
    "rooms": {"service": "conference.localhost"},
}


def config(**sections: dict[str, Any]) -> Any:
    return parse_config({**BASE, **sections}, base_dir=Path("/srv/xmlrc"))


def test_both_features_are_off_by_default() -> None:
    parsed = config()
    assert not parsed.subscriptions.enabled and not parsed.pubsub.enabled


def test_the_sections_read_back_from_the_effective_config() -> None:
    parsed = config(
        subscriptions={
            "enabled": True,
            "database": "subs.sqlite",
            "allow_domains": ["Example.org"],
        },
        pubsub={"enabled": True, "service": "pubsub.localhost", "all_node": ""},
    )
    assert parsed.subscriptions.database == "/srv/xmlrc/subs.sqlite"
    assert parsed.subscriptions.allow_domains == ("example.org",)
    assert parsed.pubsub.all_node == ""
    data = tomllib.loads(effective_toml(parsed))
    data["xmpp"]["password"] = "p"
    assert dataclasses.replace(parse_config(data), source=parsed.source) == parsed


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"subscriptions": {"enabled": True}}, "subscriptions.database: required when enabled"),
        (
            {"subscriptions": {"rate_per_minute": 0}},
            "subscriptions.rate_per_minute: must be at least",
        ),
        ({"subscriptions": {"burst": "ten"}}, "subscriptions.burst: must be an integer"),
        ({"subscriptions": {"allow_domains": "x.org"}}, "subscriptions.allow_domains: a list"),
        ({"subscriptions": {"digest": 5}}, "subscriptions.digest: unknown key"),
        ({"subscriptions": {"database": "/"}}, "subscriptions.database: / is a directory"),
        ({"pubsub": {"enabled": True}}, "pubsub.service: required when enabled"),
        ({"pubsub": {"service": "me@pubsub.x"}}, "pubsub.service: a PubSub service domain"),
        ({"pubsub": {"node": "fixed"}}, "pubsub.node: a template with {wiki}"),
        ({"pubsub": {"node": "rc/{wiki}"}}, "pubsub.node: a template with {wiki}"),
        ({"pubsub": {"node": "{wiki"}}, "pubsub.node: bad template"),
        (
            {"pubsub": {"all_node": "All Wikis"}},
            "pubsub.all_node: 'All Wikis' is not an allowed node name",
        ),
        ({"pubsub": {"max_items": 0}}, "pubsub.max_items: must be between 1"),
        ({"pubsub": {"window": True}}, "pubsub.window: must be an integer"),
    ],
)
def test_bad_values_name_their_key(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(**sections)
    assert str(error.value).startswith(message)
