"""XEP-0050 ad-hoc commands with XEP-0004 data forms: the forms and what they mean.

Pure: building the ``<x xmlns="jabber:x:data">`` forms, reading submitted
values into the same `Command` objects the chat commands give, and a small
bounded table of open sessions. The XMPP shell (`service`) does the rest.

Commands (nodes): ``watch`` (a page, a user or a filter, one form), ``unwatch``
(pick from what you watch), ``list`` (no form: the answer is a note) and
``mute`` (pick a duration).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .commands import Command, CommandError, ListCommand, Mute, parse_command
from .model import Subscription, TargetError, check_wiki

COMMANDS_NS = "http://jabber.org/protocol/commands"
DATA_NS = "jabber:x:data"
FORM_TYPE = "urn:xmlrc:watch:1"

#: node -> the name clients show.
NODES: dict[str, str] = {
    "watch": "Watch a page, a user or a filter",
    "unwatch": "Stop watching",
    "list": "What I watch",
    "mute": "Mute notifications for a while",
}
MUTE_CHOICES: tuple[tuple[str, str], ...] = (
    ("1h", "1 hour"),
    ("8h", "8 hours"),
    ("1d", "1 day"),
    ("1w", "1 week"),
    ("off", "Unmute"),
)
#: Open sessions kept, and how long one may stay open.
MAX_SESSIONS = 1000
SESSION_TTL = 600.0


@dataclass(frozen=True, slots=True)
class Session:
    """One open ad-hoc command session: whose, which command, since when, what it offered."""

    jid: str
    node: str
    started: float
    #: For ``unwatch``: the subscription ids the form offered.
    offered: tuple[int, ...] = ()


class Sessions:
    """Open command sessions, bounded (oldest dropped) and expiring."""

    def __init__(self, limit: int = MAX_SESSIONS, ttl: float = SESSION_TTL) -> None:
        self.limit = limit
        self.ttl = ttl
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, session: Session) -> str:
        while len(self._sessions) >= self.limit:
            self._sessions.popitem(last=False)
        sid = secrets.token_hex(12)
        self._sessions[sid] = session
        return sid

    def take(self, sid: str, jid: str, now: float) -> Session | None:
        """The session `sid` of `jid` (removed: each form is answered once), or None."""
        session = self._sessions.get(sid)
        if session is None or session.jid != jid:
            return None
        del self._sessions[sid]
        if now - session.started > self.ttl:
            return None
        return session

    def __len__(self) -> int:
        return len(self._sessions)


# -- forms ------------------------------------------------------------------------------


def _form(title: str, instructions: str) -> ET.Element:
    x = ET.Element(f"{{{DATA_NS}}}x", {"type": "form"})
    ET.SubElement(x, f"{{{DATA_NS}}}title").text = title
    ET.SubElement(x, f"{{{DATA_NS}}}instructions").text = instructions
    _field(x, "FORM_TYPE", "hidden", value=FORM_TYPE)
    return x


def _field(
    form: ET.Element,
    var: str,
    ftype: str,
    label: str | None = None,
    *,
    value: str | None = None,
    required: bool = False,
    options: Sequence[tuple[str, str]] = (),
    desc: str | None = None,
) -> None:
    attrs = {"var": var, "type": ftype}
    if label:
        attrs["label"] = label
    field = ET.SubElement(form, f"{{{DATA_NS}}}field", attrs)
    if desc:
        ET.SubElement(field, f"{{{DATA_NS}}}desc").text = desc
    if required:
        ET.SubElement(field, f"{{{DATA_NS}}}required")
    if value is not None:
        ET.SubElement(field, f"{{{DATA_NS}}}value").text = value
    for option_value, option_label in options:
        option = ET.SubElement(field, f"{{{DATA_NS}}}option", {"label": option_label})
        ET.SubElement(option, f"{{{DATA_NS}}}value").text = option_value


def watch_form(wikis: Sequence[str] = ()) -> ET.Element:
    form = _form(
        "Watch",
        "Tell me about changes to a page, by a user, or matching a filter. "
        "For a filter give one condition or more: namespaces, title pattern, size change.",
    )
    _field(
        form,
        "kind",
        "list-single",
        "What to watch",
        value="page",
        required=True,
        options=(("page", "A page"), ("user", "A user's changes"), ("filter", "A filter")),
    )
    known = f"Known: {', '.join(wikis[:20])}" if wikis else None
    _field(form, "wiki", "text-single", "Wiki (its ID, like enwiki)", required=True, desc=known)
    _field(form, "name", "text-single", "Page title, or user name")
    _field(form, "ns", "text-single", "Filter: namespace numbers (like 0,1)")
    _field(form, "title", "text-single", "Filter: title pattern (* is any text)")
    _field(form, "min", "text-single", "Filter: smallest size change, bytes added or removed")
    return form


def unwatch_form(subs: Sequence[Subscription]) -> ET.Element:
    form = _form("Stop watching", "Pick what you no longer want to hear about.")
    _field(
        form,
        "items",
        "list-multi",
        "Stop watching",
        required=True,
        options=[(str(sub.id), sub.target.describe()) for sub in subs],
    )
    return form


def mute_form() -> ET.Element:
    form = _form("Mute", "No notifications for a while (changes meanwhile are not sent).")
    _field(form, "duration", "list-single", "For", value="1h", required=True, options=MUTE_CHOICES)
    return form


def form_values(command: ET.Element) -> dict[str, list[str]] | None:
    """The submitted values of the command's form (None when it has no submitted form)."""
    form = command.find(f"{{{DATA_NS}}}x")
    if form is None or form.get("type") != "submit":
        return None
    values: dict[str, list[str]] = {}
    for field in form.iter(f"{{{DATA_NS}}}field"):
        var = field.get("var")
        if var:
            values[var] = [(v.text or "") for v in field.findall(f"{{{DATA_NS}}}value")]
    return values


def _one(values: dict[str, list[str]], var: str) -> str:
    got = values.get(var) or [""]
    return got[0].strip()


def command_from_form(node: str, values: dict[str, list[str]]) -> Command:
    """A submitted form as the command it stands for. Raises `CommandError`."""
    try:
        if node == "watch":
            kind = _one(values, "kind") or "page"
            wiki = check_wiki(_one(values, "wiki"))
            name = _one(values, "name")
            if kind == "page":
                return parse_command(f"watch {wiki} {name}")
            if kind == "user":
                return parse_command(f"watchuser {wiki} {name}")
            if kind == "filter":
                conditions = []
                for var, key in (("ns", "ns"), ("title", "title"), ("min", "min")):
                    value = _one(values, var)
                    if value:
                        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
                        conditions.append(f'{key}="{quoted}"')
                return parse_command(f"watchfilter {wiki} {' '.join(conditions)}")
            raise CommandError(f"Unknown kind {kind[:20]!r}: page, user or filter.")
        if node == "mute":
            duration = _one(values, "duration")
            if duration == "off":
                return Mute(0)
            return parse_command(f"mute {duration}")
        if node == "list":
            return ListCommand()
    except TargetError as exc:
        raise CommandError(str(exc)) from None
    raise CommandError(f"Unknown command {node[:30]!r}.")


def chosen_ids(values: dict[str, list[str]], offered: Sequence[int]) -> list[int]:
    """The subscription ids picked in an unwatch form, among those offered."""
    picked = {v.strip() for v in values.get("items", [])}
    return [sub_id for sub_id in offered if str(sub_id) in picked]


def command_element(
    node: str,
    sid: str,
    status: str,
    *,
    form: ET.Element | None = None,
    note: tuple[str, str] | None = None,
) -> ET.Element:
    """The ``<command>`` of a response: executing (with a form) or completed (with a note)."""
    command = ET.Element(
        f"{{{COMMANDS_NS}}}command", {"node": node, "sessionid": sid, "status": status}
    )
    if status == "executing":
        actions = ET.SubElement(command, f"{{{COMMANDS_NS}}}actions", {"execute": "complete"})
        ET.SubElement(actions, f"{{{COMMANDS_NS}}}complete")
    if note is not None:
        ET.SubElement(command, f"{{{COMMANDS_NS}}}note", {"type": note[0]}).text = note[1]
    if form is not None:
        command.append(form)
    return command
