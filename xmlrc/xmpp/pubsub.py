"""XEP-0060 publish-subscribe: nodes (create, configure, affiliations), publishing, reading.

The shared PubSub helpers of every xmlrc program: the bridge's publisher
sets its nodes up and writes publish IQs as ready-made text (through the
stream's `Outbox`); rcclient's `NodeReader` subscribes, fetches items and
reads event notifications.

Builders (``*_element``, `publish_text`, `form_element`) and readers
(`event_items`, `form_values`) are pure. The coroutines send one IQ over a
slixmpp client, with an explicit ``ifrom`` so the same code serves a c2s
client and an XEP-0114 component (which must name its own sender), and
raise `PubSubError` naming the XMPP error condition (``timeout`` when no
answer came).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.matcher.base import MatcherBase

from xmlrc.wire.rcxml import escape_attribute

__all__ = [
    "EVENT_NS",
    "NODE_CONFIG_FORM",
    "OWNER_NS",
    "PUBSUB_NS",
    "PubSubError",
    "configure_node",
    "create_node",
    "event_items",
    "fetch_items",
    "form_element",
    "form_values",
    "get_node_config",
    "on_answers",
    "on_events",
    "prepare_node",
    "publish_text",
    "set_affiliations",
    "subscribe",
    "unsubscribe",
]

PUBSUB_NS = "http://jabber.org/protocol/pubsub"
OWNER_NS = "http://jabber.org/protocol/pubsub#owner"
EVENT_NS = "http://jabber.org/protocol/pubsub#event"
NODE_CONFIG_FORM = "http://jabber.org/protocol/pubsub#node_config"
DATA_NS = "jabber:x:data"


class PubSubError(Exception):
    """The service refused a request (``condition``: the XMPP error, or ``timeout``)."""

    def __init__(self, what: str, node: str, service: str, condition: str) -> None:
        self.node = node
        self.service = service
        self.condition = condition
        super().__init__(f"cannot {what} node {node!r} on {service}: {condition}")


# -- pure builders and readers ----------------------------------------------------------------


def form_element(values: Mapping[str, str], form_type: str | None = NODE_CONFIG_FORM) -> ET.Element:
    """A submitted data form (XEP-0004) with these field values, FORM_TYPE first."""
    form = ET.Element(f"{{{DATA_NS}}}x", {"type": "submit"})
    if form_type is not None:
        field = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": "FORM_TYPE", "type": "hidden"})
        ET.SubElement(field, f"{{{DATA_NS}}}value").text = form_type
    for var, value in values.items():
        field = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": var})
        ET.SubElement(field, f"{{{DATA_NS}}}value").text = value
    return form


def form_values(element: ET.Element) -> dict[str, str]:
    """The fields of the first data form under `element` (multiple values joined by
    newlines); empty when there is none."""
    form = element.find(f".//{{{DATA_NS}}}x")
    if form is None:
        return {}
    return {
        field.get("var", ""): "\n".join(v.text or "" for v in field.findall(f"{{{DATA_NS}}}value"))
        for field in form.findall(f"{{{DATA_NS}}}field")
        if field.get("var")
    }


def create_element(node: str, config: Mapping[str, str]) -> ET.Element:
    """``<pubsub><create/><configure>form</configure></pubsub>``: a node created configured."""
    pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}create", {"node": node})
    ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}configure").append(form_element(config))
    return pubsub


def configure_element(node: str, config: Mapping[str, str] | None = None) -> ET.Element:
    """The owner's ``<configure>``: with `config` a submission, without it a request for
    the current configuration."""
    pubsub = ET.Element(f"{{{OWNER_NS}}}pubsub")
    configure = ET.SubElement(pubsub, f"{{{OWNER_NS}}}configure", {"node": node})
    if config is not None:
        configure.append(form_element(config))
    return pubsub


def affiliations_element(node: str, affiliations: Iterable[tuple[str, str]]) -> ET.Element:
    """The owner's ``<affiliations>``: (bare JID, affiliation) pairs to set."""
    pubsub = ET.Element(f"{{{OWNER_NS}}}pubsub")
    parent = ET.SubElement(pubsub, f"{{{OWNER_NS}}}affiliations", {"node": node})
    for jid, affiliation in affiliations:
        ET.SubElement(
            parent, f"{{{OWNER_NS}}}affiliation", {"jid": jid, "affiliation": affiliation}
        )
    return pubsub


def subscription_element(verb: str, node: str, jid: str) -> ET.Element:
    """``<subscribe/>`` or ``<unsubscribe/>`` of `jid` (a bare JID) to `node`."""
    pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}{verb}", {"node": node, "jid": jid})
    return pubsub


def items_element(node: str, max_items: int) -> ET.Element:
    pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}items", {"node": node, "max_items": str(max_items)})
    return pubsub


def publish_text(
    service: str, node: str, item_id: str, payload: str, iq_id: str, sender: str | None = None
) -> str:
    """A publish IQ as text, for `Outbox.write`: one item, `payload` already serialised.

    `item_id` must be XML-safe text (it is escaped, not filtered).
    """
    sender_attr = f' from="{escape_attribute(sender)}"' if sender else ""
    return (
        f'<iq type="set" to="{escape_attribute(service)}" id="{escape_attribute(iq_id)}"'
        f'{sender_attr}><pubsub xmlns="{PUBSUB_NS}"><publish node="{escape_attribute(node)}">'
        f'<item id="{escape_attribute(item_id)}">{payload}</item></publish></pubsub></iq>'
    )


def event_items(message: ET.Element, node: str) -> Iterator[ET.Element]:
    """The ``<item>`` elements of `node` in an event notification (other nodes skipped)."""
    for items in message.iter(f"{{{EVENT_NS}}}items"):
        if items.get("node") == node:
            yield from items.iter(f"{{{EVENT_NS}}}item")


# -- requests -----------------------------------------------------------------------------------


async def _request(
    client: Any,
    what: str,
    service: str,
    node: str,
    payload: ET.Element,
    *,
    get: bool = False,
    ifrom: str | None,
    timeout: float,
) -> ET.Element:
    """Send one IQ carrying `payload` to `service`; the answer's element."""
    to, sender = slixmpp.JID(service), slixmpp.JID(ifrom) if ifrom else None
    iq = (
        client.make_iq_get(ito=to, ifrom=sender)
        if get
        else client.make_iq_set(ito=to, ifrom=sender)
    )
    iq.xml.append(payload)
    try:
        result = await iq.send(timeout=timeout)
    except IqError as exc:
        raise PubSubError(
            what, node, service, str(exc.iq["error"]["condition"]) or "error"
        ) from None
    except IqTimeout:
        raise PubSubError(what, node, service, "timeout") from None
    return result.xml  # type: ignore[no-any-return]


async def create_node(
    client: Any,
    service: str,
    node: str,
    config: Mapping[str, str],
    *,
    ifrom: str | None = None,
    timeout: float = 20.0,
) -> None:
    """Create `node` with `config`; `PubSubError` ``conflict`` when it exists."""
    payload = create_element(node, config)
    await _request(client, "create", service, node, payload, ifrom=ifrom, timeout=timeout)


async def configure_node(
    client: Any,
    service: str,
    node: str,
    config: Mapping[str, str],
    *,
    ifrom: str | None = None,
    timeout: float = 20.0,
) -> None:
    """Submit `config` for an existing node (we must own it)."""
    payload = configure_element(node, config)
    await _request(client, "configure", service, node, payload, ifrom=ifrom, timeout=timeout)


async def get_node_config(
    client: Any, service: str, node: str, *, ifrom: str | None = None, timeout: float = 20.0
) -> dict[str, str]:
    """The node's configuration as the owner sees it (``pubsub#access_model``: ...)."""
    payload = configure_element(node)
    answer = await _request(
        client, "read the configuration of", service, node, payload, get=True, ifrom=ifrom,
        timeout=timeout,
    )  # fmt: skip
    return form_values(answer)


async def set_affiliations(
    client: Any,
    service: str,
    node: str,
    affiliations: Iterable[tuple[str, str]],
    *,
    ifrom: str | None = None,
    timeout: float = 20.0,
) -> None:
    payload = affiliations_element(node, affiliations)
    await _request(
        client, "set the affiliations of", service, node, payload, ifrom=ifrom, timeout=timeout
    )


async def prepare_node(
    client: Any,
    service: str,
    node: str,
    config: Mapping[str, str],
    members: Iterable[str] = (),
    *,
    ifrom: str | None = None,
    timeout: float = 20.0,
) -> bool:
    """Make `node` exist with `config` (created, or reconfigured when it exists) and give
    `members` the member affiliation. True when it was created now."""
    try:
        await create_node(client, service, node, config, ifrom=ifrom, timeout=timeout)
        created = True
    except PubSubError as exc:
        if exc.condition != "conflict":
            raise
        created = False
        # An existing node is configured again: whatever it was, it gets our access model.
        await configure_node(client, service, node, config, ifrom=ifrom, timeout=timeout)
    affiliations = [(member, "member") for member in members]
    if affiliations:
        await set_affiliations(client, service, node, affiliations, ifrom=ifrom, timeout=timeout)
    return created


async def subscribe(
    client: Any, service: str, node: str, jid: str, *, ifrom: str | None = None,
    timeout: float = 20.0,
) -> None:  # fmt: skip
    """Subscribe `jid` (a bare JID: the subscription outlives this connection)."""
    payload = subscription_element("subscribe", node, jid)
    await _request(client, "subscribe to", service, node, payload, ifrom=ifrom, timeout=timeout)


async def unsubscribe(
    client: Any, service: str, node: str, jid: str, *, ifrom: str | None = None,
    timeout: float = 20.0,
) -> None:  # fmt: skip
    payload = subscription_element("unsubscribe", node, jid)
    await _request(client, "unsubscribe from", service, node, payload, ifrom=ifrom, timeout=timeout)


async def fetch_items(
    client: Any, service: str, node: str, max_items: int, *, ifrom: str | None = None,
    timeout: float = 20.0,
) -> list[ET.Element]:  # fmt: skip
    """The last `max_items` ``<item>`` elements the node keeps, in the order served."""
    payload = items_element(node, max_items)
    answer = await _request(
        client, "fetch the items of", service, node, payload, get=True, ifrom=ifrom,
        timeout=timeout,
    )  # fmt: skip
    return answer.findall(f".//{{{PUBSUB_NS}}}item")


# -- incoming -----------------------------------------------------------------------------------


class _IdPrefix(MatcherBase):
    """Matches answers (result or error) to IQs whose id starts with a prefix."""

    def match(self, stanza: Any) -> bool:
        return bool(
            stanza.name == "iq"
            and stanza["type"] in ("result", "error")
            and str(stanza["id"]).startswith(self._criteria)
        )


def on_answers(client: Any, id_prefix: str, callback: Callable[[str, str | None], None]) -> None:
    """`callback(iq_id, condition)` for each answer to our text-written IQs whose id starts
    with `id_prefix`: ``condition`` None for a result, else the error condition."""

    def answered(iq: Any) -> None:
        condition = None
        if iq["type"] == "error":
            condition = str(iq["error"]["condition"]) or "error"
        callback(str(iq["id"]), condition)

    client.register_handler(Callback(f"pubsub answers {id_prefix}", _IdPrefix(id_prefix), answered))


def on_events(client: Any, service: str, callback: Callable[[ET.Element], None]) -> None:
    """`callback(message element)` for each event notification from `service`.

    The raw element is handed over: slixmpp's stanza iterators share their
    position, and iterating them inside its own pubsub handlers never ends.
    """
    bare = slixmpp.JID(service).bare

    def event(msg: Any) -> None:
        if msg["from"].bare == bare:
            callback(msg.xml)

    for namespace in ("jabber:client", "jabber:component:accept"):
        client.register_handler(
            Callback(
                f"pubsub events {service} {namespace}",
                MatchXPath(f"{{{namespace}}}message/{{{EVENT_NS}}}event"),
                event,
            )
        )
