"""The ``rcclient`` command: ``rcclient tail ROOM...`` prints changes as they happen.

Only the bridge's messages are printed (``--publisher``, ``--publisher-jid``,
repeatable for a bridge pair's two accounts; see `RCClient`), from moderated
rooms unless ``--allow-unmoderated`` (then a warning on stderr). ``--json``
lines name their room (a ``"room"`` key).

Errors are one line on stderr (``rcclient: no such room: x@conference...``):
exit status 1 when the server, the account or a room is the problem, 2 for
bad options or settings.

``rcclient audit ROOM --api URL --since T`` proves that nothing was lost: it
reads the room's archive and the wiki's ``list=recentchanges`` for the window
(through rc2udp's polite API client and poller: continuation, User-Agent with
a contact, maxlag, page delay, limits) and prints what `rcclient.audit.compare`
found. Exit status 0 when the room matches, 1 when it does not, 2 for bad
options and for a server, room or wiki that cannot be read (one line on stderr).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import InvalidJID

from rc2udp.api import ApiClient, ApiError, user_agent
from rc2udp.config import is_loopback_url
from rc2udp.limits import Limits
from rc2udp.poll import WikiPoller
from rc2udp.state import StateFile
from xmlrc.wire import (
    DecodeError,
    RecentChange,
    change_from_element,
    change_to_json,
    change_to_line,
)
from xmlrc.wire.rcxml import RC_TAG
from xmlrc.xmpp import muc
from xmlrc.xmpp.archive import query_page
from xmlrc.xmpp.muc import PUBLISHER_NICK
from xmlrc.xmpp.session import CLIENT_PORT, Endpoint, Session, SessionError

from .audit import FEEDS, Feed, Window, archived_distrust, compare, default_fields, parse_fields
from .client import Gap, RCClient, RCClientError
from .config import Account, ConfigError, Trust, parse_since, resolve_account, resolve_trust
from .filters import ChangeFilter

F = TypeVar("F", bound=Callable[..., Any])

_ACCOUNT_OPTIONS = (
    click.option("--jid", help="Your account (or $RCCLIENT_JID, or the config file)."),
    click.option("--password", help="Its password (or $RCCLIENT_PASSWORD, or the config file)."),
    click.option("--host", help="Server to connect to (default: the JID's domain)."),
    click.option("--port", type=int, help=f"Its client port (default {CLIENT_PORT})."),
    click.option(
        "--server",
        "servers",
        multiple=True,
        help="Another node of the same service, HOST:PORT (repeatable): tried in turn when "
        "the connection ends.",
    ),
    click.option("--ca-file", help="CA certificate (PEM) that signed the server's certificate."),
    click.option(
        "--config",
        "config_path",
        help="Config file (TOML, an [account] table); default ~/.config/rcclient.toml.",
    ),
)


def _account_options(command: F) -> F:
    """The account options every command that logs in takes, in one place."""
    for option in reversed(_ACCOUNT_OPTIONS):
        command = option(command)
    return command


@click.group()
def main() -> None:
    """Follow wiki recent changes published in XMPP rooms."""


@dataclass(frozen=True)
class _Output:
    as_json: bool
    colour: bool
    count: int | None


@main.command()
@click.argument("rooms", nargs=-1, required=True)
@_account_options
@click.option("--nick", help="Nickname in the rooms (default: your name and a random suffix).")
@click.option(
    "--publisher",
    help="The bridge's nick in the rooms: only its changes are believed "
    f"(default {PUBLISHER_NICK}).",
)
@click.option(
    "--publisher-jid",
    "publisher_jids",
    multiple=True,
    help="The bridge's account; checked where a room shows its occupants' real JIDs "
    "(repeatable: a bridge pair has two accounts).",
)
@click.option(
    "--allow-unmoderated",
    is_flag=True,
    help="Read rooms that are not moderated (with a warning) instead of refusing them.",
)
@click.option("--wiki", "wikis", multiple=True, help="Only this wiki ID (repeatable).")
@click.option("--type", "types", multiple=True, help="Only this type: edit, new, log...")
@click.option("--ns", "namespaces", type=int, multiple=True, help="Only this namespace number.")
@click.option("--no-bots", is_flag=True, help="Leave out bot changes.")
@click.option("--user", "users", multiple=True, help="Only changes by this user (repeatable).")
@click.option("--title-regex", help="Only titles this Python regular expression finds.")
@click.option(
    "--title-glob", help="Only titles this pattern matches whole: * any text, ? one character."
)
@click.option("--min-change", type=int, help="Only size changes of at least this many bytes.")
@click.option(
    "--max-change", type=int, help="Only size changes of at most this (-500: removals of 500+)."
)
@click.option(
    "--min-abs-change",
    type=click.IntRange(min=0),
    help="Only changes adding or removing at least this many bytes.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object a line, in the EventStreams recentchange shape, with its room.",
)
@click.option(
    "--since",
    help="First replay the rooms' archives from this time: 10m, 2h, 1d or an ISO time.",
)
@click.option(
    "--resume",
    "state_file",
    type=click.Path(dir_okay=False),
    help="State file: continue after the last change a previous run printed.",
)
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many changes.")
@click.option("-v", "--verbose", count=True, help="Log what the client does (twice: XMPP too).")
def tail(
    rooms: tuple[str, ...],
    jid: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    servers: tuple[str, ...],
    ca_file: str | None,
    config_path: str | None,
    nick: str | None,
    publisher: str | None,
    publisher_jids: tuple[str, ...],
    allow_unmoderated: bool,
    wikis: tuple[str, ...],
    types: tuple[str, ...],
    namespaces: tuple[int, ...],
    no_bots: bool,
    users: tuple[str, ...],
    title_regex: str | None,
    title_glob: str | None,
    min_change: int | None,
    max_change: int | None,
    min_abs_change: int | None,
    as_json: bool,
    since: str | None,
    state_file: str | None,
    count: int | None,
    verbose: int,
) -> None:
    """Print every change posted in ROOMS (room JIDs) until interrupted."""
    _setup_logging(verbose)
    try:
        account = resolve_account(
            jid=jid,
            password=password,
            host=host,
            port=port,
            ca_file=ca_file,
            config=config_path,
            servers=servers,
        )
        trust = resolve_trust(
            publisher=publisher,
            publisher_jid=publisher_jids,
            allow_unmoderated=allow_unmoderated,
            config=config_path,
        )
        since_time = parse_since(since) if since else None
        where = _filter(
            wikis,
            types,
            namespaces,
            no_bots,
            users,
            title_regex,
            min_change,
            max_change,
            title_glob=title_glob,
            min_abs_change=min_abs_change,
        )
    except (ConfigError, ValueError) as exc:
        _fail(str(exc), 2)
    colour = not as_json and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    output = _Output(as_json=as_json, colour=colour, count=count)
    options: dict[str, Any] = {
        "nick": nick,
        "since": since_time,
        "state_file": state_file,
        "trust": trust,
    }
    try:
        asyncio.run(_tail(account, rooms, where, output, options))
    except RCClientError as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # a bad room JID
        _fail(str(exc), 2)
    except BrokenPipeError:  # `rcclient tail | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"rcclient: {message}", err=True)
    sys.exit(status)


def _setup_logging(verbose: int) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "rcclient_cli", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rcclient: %(message)s"))
    handler.rcclient_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("rcclient").setLevel(logging.INFO if verbose else logging.WARNING)
    # slixmpp logs tracebacks for conditions we report in one line ourselves.
    logging.getLogger("slixmpp").setLevel(logging.DEBUG if verbose > 1 else logging.CRITICAL + 1)


def _filter(
    wikis: tuple[str, ...],
    types: tuple[str, ...],
    namespaces: tuple[int, ...],
    no_bots: bool,
    users: tuple[str, ...],
    title_regex: str | None,
    min_change: int | None,
    max_change: int | None,
    *,
    title_glob: str | None = None,
    min_abs_change: int | None = None,
) -> ChangeFilter:
    """The conditions of `rcclient tail`'s options, for the one filter engine."""
    conditions: dict[str, Any] = {}
    if wikis:
        conditions["wiki"] = wikis
    if types:
        conditions["type"] = types
    if namespaces:
        conditions["ns"] = namespaces
    if no_bots:
        conditions["bot"] = False
    if users:
        conditions["user"] = users
    if title_regex is not None:
        conditions["title_regex"] = title_regex
    if min_change is not None:
        conditions["min_change"] = min_change
    if max_change is not None:
        conditions["max_change"] = max_change
    if title_glob is not None:
        conditions["title_glob"] = title_glob
    if min_abs_change is not None:
        conditions["min_abs_change"] = min_abs_change
    return ChangeFilter(**conditions)


async def _tail(
    account: Account,
    rooms: tuple[str, ...],
    where: ChangeFilter,
    output: _Output,
    options: dict[str, Any],
) -> None:
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    since: datetime | None = options["since"]
    trust: Trust = options["trust"]
    client = RCClient(
        account.jid,
        account.password,
        rooms,
        host=account.host,
        port=account.port,
        servers=account.servers,
        ca_file=account.ca_file,
        nick=options["nick"],
        since=since,
        state_file=options["state_file"],
        publisher=trust.publisher,
        publisher_jid=trust.publisher_jids,
        require_moderated=trust.require_moderated,
    )
    if not where.empty:
        client.register_filter(where)
    printed = 0
    async with client:
        # On stderr in every mode (stdout stays data), so scripts can wait for it.
        click.echo(f"# joined {', '.join(client.rooms)}", err=True)
        async for event in client.events():
            if isinstance(event, Gap):
                click.echo(f"rcclient: gap in {event.room}: {event.reason}", err=True)
                continue
            if output.as_json:
                data = change_to_json(event.change)
                data["room"] = event.room  # which room said it (EventStreams has no such key)
                line = json.dumps(data, ensure_ascii=False)
            else:
                line = _text_line(event.change, output.colour)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            printed += 1
            if output.count is not None and printed >= output.count:
                return


def _text_line(change: RecentChange, colour: bool) -> str:
    wiki = f"[{change.wiki}]"
    line = change_to_line(change)
    if not colour:
        return f"{wiki} {line}"
    delta = change.size_change
    tint = "yellow" if change.is_log else ("green" if (delta or 0) >= 0 else "red")
    return f"{click.style(wiki, fg='cyan')} {click.style(line, fg=tint)}"


# -- rcclient audit: the room against the wiki's own record ---------------------------

#: Pages of the archive read at most (50 messages each): 10 million messages.
_AUDIT_MAX_PAGES = 200_000
#: Rounds of the API poller at most (each up to ``max_pages`` pages).
_AUDIT_MAX_ROUNDS = 1_000
_AUDIT_PAGE_SIZE = 50
_AUDIT_IQ_TIMEOUT = 30.0
_DURATION_TEXT = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


class _AuditError(Exception):
    """The audit could not read one of the two records (exit status 2)."""


@dataclass
class _ArchiveRead:
    changes: list[RecentChange]
    messages: int = 0
    #: Changes from anyone but the publisher (not believed), and undecodable payloads.
    not_from_publisher: int = 0
    undecodable: int = 0


@dataclass
class _WikiRead:
    wiki: str
    changes: list[RecentChange]
    patrolled: bool
    undecodable: int
    requests: int


def _duration(text: str, option: str) -> timedelta:
    value = text.replace(" ", "")
    if not _DURATION_TEXT.fullmatch(value):
        raise ConfigError(f"{option}: expected a duration (90s, 10m, 2h, 1d), not {text!r}")
    now = datetime.now(UTC)
    return now - parse_since(value, now=now)


def _room(text: str) -> str:
    try:
        jid = slixmpp.JID(text)
    except InvalidJID:
        jid = None
    if jid is None or not jid.user or not jid.domain or jid.resource:
        raise ConfigError(f"not a room JID (room@service): {text!r}")
    return str(jid.bare)


@main.command()
@click.argument("room")
@click.option("--api", "api_url", required=True, help="The wiki's api.php URL.")
@click.option("--since", required=True, help="Window start: 2h, 1d or an ISO time (UTC).")
@click.option("--until", help="Window end: 5m (ago), 1h or an ISO time (default: now).")
@click.option(
    "--margin",
    default="10m",
    show_default=True,
    help="Archive read this much beyond the window each side (archive time is not change time).",
)
@click.option(
    "--feed",
    type=click.Choice(FEEDS),
    default="mediawiki",
    show_default=True,
    help="How the room is fed: MediaWiki's UDP feed (JSON or XML) or rc2udp poll.",
)
@click.option(
    "--fields",
    help="Fields to compare, comma-separated (default: what --feed carries); "
    "+name,-name change the defaults.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document: counts and lists.")
@_account_options
@click.option(
    "--publisher",
    help=f"The bridge's nick in the room: only its changes count (default {PUBLISHER_NICK}).",
)
@click.option(
    "--publisher-jid",
    "publisher_jids",
    multiple=True,
    help="The bridge's account; checked where the archive shows it "
    "(repeatable: a bridge pair has two accounts).",
)
@click.option("--allow-unmoderated", is_flag=True, help="Audit a room that is not moderated.")
@click.option("--contact", help="E-mail or URL for the User-Agent (Wikimedia asks for one).")
@click.option("--user-agent", "agent", help="The whole User-Agent, instead of the default one.")
@click.option(
    "--maxlag", type=int, default=5, show_default=True, help="API maxlag in seconds (-1: off)."
)
@click.option(
    "--page-delay",
    type=float,
    default=Limits().page_delay,
    show_default=True,
    help="Seconds between two API pages.",
)
@click.option("--api-login", help="Bot password user (Name@appid): patrol flags need one.")
@click.option(
    "--api-password-file",
    type=click.Path(dir_okay=False),
    help="File holding that bot password (or $RCCLIENT_API_PASSWORD).",
)
@click.option("-v", "--verbose", count=True, help="Log what the audit does (twice: XMPP too).")
def audit(
    room: str,
    api_url: str,
    since: str,
    until: str | None,
    margin: str,
    feed: Feed,
    fields: str | None,
    as_json: bool,
    jid: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    servers: tuple[str, ...],
    ca_file: str | None,
    config_path: str | None,
    publisher: str | None,
    publisher_jids: tuple[str, ...],
    allow_unmoderated: bool,
    contact: str | None,
    agent: str | None,
    maxlag: int,
    page_delay: float,
    api_login: str | None,
    api_password_file: str | None,
    verbose: int,
) -> None:
    """Compare ROOM's archive with the wiki's recent changes from --since to --until.

    Prints what is missing from the room, extra, duplicated or different.
    Exit status 0: the room matches; 1: it does not; 2: bad options, or a
    server, room or wiki that cannot be read.
    """
    _setup_logging(verbose)
    try:
        room_jid = _room(room)
        account = resolve_account(
            jid=jid,
            password=password,
            host=host,
            port=port,
            ca_file=ca_file,
            config=config_path,
            servers=servers,
        )
        trust = resolve_trust(
            publisher=publisher,
            publisher_jid=publisher_jids,
            allow_unmoderated=allow_unmoderated,
            config=config_path,
        )
        now = datetime.now(UTC)
        start = parse_since(since, now=now).replace(microsecond=0)
        end = (parse_since(until, now=now) if until else now).replace(microsecond=0)
        if end < start:
            raise ConfigError("--until is before --since")
        slack = _duration(margin, "--margin")
        chosen = parse_fields(fields, feed) if fields else default_fields(feed)
        named = {f.strip().lstrip("+") for f in (fields or "").split(",")} - {""}
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"--api: expected an http(s) URL of api.php, not {api_url!r}")
        if agent is None and contact is None and not is_loopback_url(api_url):
            raise ConfigError(
                "--contact EMAIL_OR_URL (or --user-agent): Wikimedia's User-Agent "
                "policy asks every client for a way to reach its operator"
            )
        if page_delay < 0:
            raise ConfigError("--page-delay: expected a number >= 0")
        login = None
        if api_login:
            login = (api_login, _api_password(api_password_file))
    except (ConfigError, ValueError) as exc:
        _fail(str(exc), 2)
    wiki_client = ApiClient(
        api_url,
        user_agent=agent or user_agent(contact, tool="rcclient-audit"),
        maxlag=None if maxlag < 0 else maxlag,
        limits=Limits(page_delay=page_delay),
    )
    try:
        archive, wiki = asyncio.run(
            _audit_reads(account, room_jid, trust, wiki_client, login, start, end, slack)
        )
    except _AuditError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 2)
    if not wiki.patrolled and "patrolled" in chosen and "patrolled" not in named:
        # The API gives patrol flags only to users with the right: not compared then.
        chosen = tuple(name for name in chosen if name != "patrolled")
    report = compare(
        archive.changes, wiki.changes, chosen, window=Window(start, end, wiki.wiki), feed=feed
    )
    reads = {
        "room": room_jid,
        "api": api_url,
        "feed": feed,
        "archive": {
            "messages": archive.messages,
            "not_from_publisher": archive.not_from_publisher,
            "undecodable": archive.undecodable,
            "from": _iso(start - slack),
        },
        "wiki_api": {
            "requests": wiki.requests,
            "undecodable": wiki.undecodable,
            "patrol_flags": wiki.patrolled,
        },
    }
    if as_json:
        document = {**reads, **report.to_json()}
        click.echo(json.dumps(document, ensure_ascii=False))
    else:
        click.echo(f"room {room_jid} against {api_url} (fed by {feed})")
        click.echo(
            f"archive: {archive.messages} messages read from {_iso(start - slack)}"
            f" ({archive.not_from_publisher} not from the publisher,"
            f" {archive.undecodable} undecodable, ignored)"
        )
        if wiki.undecodable:
            click.echo(f"wiki: {wiki.undecodable} rows it gave could not be decoded")
        if not wiki.patrolled:
            click.echo("wiki: no patrol flags without a login (--api-login)")
        click.echo(report.text())
    sys.exit(0 if report.ok else 1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_password(path: str | None) -> str:
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"--api-password-file: cannot read {path}: {exc.strerror}") from None
    password = os.environ.get("RCCLIENT_API_PASSWORD")
    if not password:
        raise ConfigError("--api-login: give --api-password-file or set $RCCLIENT_API_PASSWORD")
    return password


async def _audit_reads(
    account: Account,
    room: str,
    trust: Trust,
    wiki_client: ApiClient,
    login: tuple[str, str] | None,
    start: datetime,
    end: datetime,
    margin: timedelta,
) -> tuple[_ArchiveRead, _WikiRead]:
    """Both records: log in and check the room first (a wrong password fails at
    once), then the wiki's record, then the room's archive to past the window's end."""
    session = Session(
        Endpoint(
            account.jid,
            account.password,
            host=account.host,
            port=account.port,
            ca_file=account.ca_file,
            alternates=account.servers,
        ),
        plugins=("xep_0030", "xep_0059", "xep_0313"),
    )
    try:
        await session.start(wait=True)
    except SessionError as exc:
        raise _AuditError(str(exc)) from None
    try:
        await _check_room(session.client, room, trust)
        async with wiki_client:
            wiki = await _read_wiki(wiki_client, login, start, end)
        archive = await _read_archive(session.client, room, trust, start - margin, end + margin)
    except IqTimeout:
        raise _AuditError(f"no answer from {room} within {_AUDIT_IQ_TIMEOUT:g} s") from None
    finally:
        await session.stop()
    return archive, wiki


async def _check_room(client: Any, room: str, trust: Trust) -> None:
    """The room exists (asking does not create it) and is moderated, unless allowed."""
    try:
        info = await muc.room_info(client, room, timeout=_AUDIT_IQ_TIMEOUT)
    except IqError as exc:
        if exc.condition == "item-not-found":
            raise _AuditError(f"no such room: {room}") from None
        raise _AuditError(f"cannot read {room}: {exc.condition}") from None
    if not info.moderated and trust.require_moderated:
        raise _AuditError(
            f"{room} is not moderated: any occupant may post there, so its changes "
            "cannot be trusted (--allow-unmoderated audits it anyway)"
        )


async def _read_wiki(
    client: ApiClient, login: tuple[str, str] | None, start: datetime, end: datetime
) -> _WikiRead:
    """``list=recentchanges`` from `start` to `end` (inclusive), oldest first, through
    rc2udp's poller: continuation, page delay, limits, each rcid once."""

    class Collect:
        def __init__(self) -> None:
            self.changes: list[RecentChange] = []

        async def send(self, change: RecentChange) -> None:
            self.changes.append(change)

    sink = Collect()
    poller = WikiPoller(
        client, sink, StateFile(None), since=start, until=end, login=login, lookback=timedelta(0)
    )
    never = asyncio.Event()
    try:
        for _round in range(_AUDIT_MAX_ROUNDS):
            cut_short = poller.stats.cut_short
            await poller.poll_once(never)
            if poller.stats.cut_short == cut_short:
                break  # the API said it had no more
        else:
            raise _AuditError(f"{client.api_url}: still more after {_AUDIT_MAX_ROUNDS} rounds")
    except ApiError as exc:
        raise _AuditError(f"{client.api_url}: {exc}") from None
    assert poller.site is not None
    return _WikiRead(
        wiki=poller.site.wiki,
        changes=sink.changes,
        patrolled="patrolled" in poller.prop.split("|"),
        undecodable=poller.stats.undecodable,
        requests=client.requests,
    )


async def _read_archive(
    client: Any, room: str, trust: Trust, start: datetime, end: datetime
) -> _ArchiveRead:
    """The room's archive from archive time `start` on, until a page holds a change
    whose own time is past `end` (or the archive ends). The room is not joined."""
    read = _ArchiveRead(changes=[])
    after: str | None = None
    for _page in range(_AUDIT_MAX_PAGES):
        try:
            page = await query_page(
                client,
                room,
                timeout=_AUDIT_IQ_TIMEOUT,
                page_size=_AUDIT_PAGE_SIZE,
                after=after,
                start=start if after is None else None,
            )
        except IqError as exc:
            raise _AuditError(f"cannot read the archive of {room}: {exc.condition}") from None
        past_the_end = False
        for message in page.messages:
            read.messages += 1
            elements = message.message.findall(RC_TAG)
            if not elements:
                continue
            if archived_distrust(message.message, room, trust.publisher, trust.publisher_jids):
                read.not_from_publisher += 1
                continue
            for element in elements:
                try:
                    change = change_from_element(element)
                except (DecodeError, ValueError, OverflowError, TypeError):
                    read.undecodable += 1
                    continue
                read.changes.append(change)
                past_the_end = past_the_end or change.timestamp > end
        last = page.messages[-1].archive_id if page.messages else None
        if page.complete or last is None or past_the_end:
            return read
        after = last
    raise _AuditError(f"{room}: more than {_AUDIT_MAX_PAGES * _AUDIT_PAGE_SIZE} messages to read")
