"""The pure parts of `xmlrc.xmpp.pubsub`: stanza text and elements built, events read."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xmlrc.xmpp import pubsub

X = "{jabber:x:data}"
PS = f"{{{pubsub.PUBSUB_NS}}}"
EV = f"{{{pubsub.EVENT_NS}}}"


def test_publish_text_escapes_every_attribute_and_keeps_the_payload() -> None:
    text = pubsub.publish_text(
        "pubsub.example.org", 'n"ode', "wiki/1<&>", "<rc xmlns='urn:x'/>", "id1", "b@c.example"
    )
    iq = ET.fromstring(text)  # noqa: S314 - our own text
    assert iq.get("to") == "pubsub.example.org" and iq.get("from") == "b@c.example"
    item = iq.find(f"{PS}pubsub/{PS}publish/{PS}item")
    assert item is not None and item.get("id") == "wiki/1<&>"
    assert iq.find(f"{PS}pubsub/{PS}publish").get("node") == 'n"ode'  # type: ignore[union-attr]
    assert [child.tag for child in item] == ["{urn:x}rc"]
    assert 'from="' not in pubsub.publish_text("s", "n", "i", "", "id2")  # a client: no from


def test_a_node_is_created_with_its_configuration_form_first_typed() -> None:
    create = pubsub.create_element("secret", {"pubsub#access_model": "whitelist"})
    assert create.find(f"{PS}create").get("node") == "secret"  # type: ignore[union-attr]
    form = create.find(f"{PS}configure/{X}x")
    assert form is not None and form.get("type") == "submit"
    fields = form.findall(f"{X}field")
    assert fields[0].get("var") == "FORM_TYPE" and fields[0].get("type") == "hidden"
    assert pubsub.form_values(create) == {
        "FORM_TYPE": pubsub.NODE_CONFIG_FORM,
        "pubsub#access_model": "whitelist",
    }
    request = pubsub.configure_element("secret")  # no form: asks for the configuration
    assert request.find(f".//{X}x") is None and pubsub.form_values(request) == {}


def test_affiliations_and_subscriptions_name_the_node_and_the_jids() -> None:
    owner = f"{{{pubsub.OWNER_NS}}}"
    element = pubsub.affiliations_element("n", [("a@x", "member"), ("b@x", "none")])
    pairs = [(a.get("jid"), a.get("affiliation")) for a in element.iter(f"{owner}affiliation")]
    assert pairs == [("a@x", "member"), ("b@x", "none")]
    sub = pubsub.subscription_element("unsubscribe", "n", "me@x")
    assert sub.find(f"{PS}unsubscribe").attrib == {"node": "n", "jid": "me@x"}  # type: ignore[union-attr]
    items = pubsub.items_element("n", 7)
    assert items.find(f"{PS}items").attrib == {"node": "n", "max_items": "7"}  # type: ignore[union-attr]


def test_event_items_are_only_those_of_the_node_asked_for() -> None:
    message = ET.fromstring(  # noqa: S314 - the test's own text
        f'<message xmlns="jabber:client"><event xmlns="{pubsub.EVENT_NS}">'
        '<items node="other"><item id="x"/></items>'
        '<items node="mine"><item id="1"/><item id="2"/></items>'
        "</event></message>"
    )
    assert [item.get("id") for item in pubsub.event_items(message, "mine")] == ["1", "2"]
    assert list(pubsub.event_items(message, "none")) == []
    assert all(item.tag == f"{EV}item" for item in pubsub.event_items(message, "other"))
