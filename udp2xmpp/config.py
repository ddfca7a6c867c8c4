"""The bridge's TOML configuration: reading, defaults and validation.

A bad value stops startup with a `ConfigError` that names the key
(``udp.listen: ...``). Secrets can come from the file, a file named in it,
or the environment, so the config itself can be world-readable.

Every default is stated once, in the settings dataclasses below; the parse
functions read it from there (`settings_default`), never repeat it.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from slixmpp.jid import JID, InvalidJID

from xmlrc.wire.coerce import WIKI_ID
from xmlrc.wire.datagram import BRIDGE_HOST, BRIDGE_PORT, MAX_DATAGRAM
from xmlrc.wire.model import utc_from_iso
from xmlrc.xmpp.muc import PUBLISHER_NICK
from xmlrc.xmpp.session import CLIENT_PORT, COMPONENT_PORT, split_hostport

from .route.model import DEFAULT_DESCRIPTION, DEFAULT_ROOM, ROOM_NAME, RoutingSettings
from .route.settings import ROOMS_KEYS, RoutingConfigError, parse_routing
from .source.allow import LOOPBACK, parse_network

PASSWORD_ENV = "UDP2XMPP_PASSWORD"  # noqa: S105 - a variable name, not a password
#: Where udp.secret comes from when the config names none (optional).
SECRET_ENV = "UDP2XMPP_SECRET"  # noqa: S105 - a variable name, not a secret


class ConfigError(ValueError):
    """A config value is missing or wrong; the message starts with the key."""


@dataclass(frozen=True, slots=True)
class XmppSettings:
    """``[xmpp]``: the account or component the bridge connects as, and its keepalive."""

    jid: str
    password: str = field(repr=False)  # never in a log line or traceback
    host: str | None = None
    #: In client mode; a component's default is `COMPONENT_PORT`.
    port: int = CLIENT_PORT
    #: ``servers = ["host:port", ...]``: the nodes of a cluster, tried in turn (the
    #: first is also host/port); the bridge moves to the next when one stops answering.
    servers: tuple[tuple[str, int], ...] = ()
    ca_file: str | None = None
    #: Off only for throwaway servers on loopback; verification is the default.
    verify_tls: bool = True
    #: "client" (c2s, STARTTLS, XEP-0198) or "component" (XEP-0114, for high volume).
    mode: str = "client"
    #: In component mode: the local part the bridge speaks as (user@component.domain).
    component_user: str = "bridge"
    #: Seconds between XEP-0410 self-pings of each room, and the answer deadline.
    self_ping_interval: float = 60.0
    ping_timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Per-source token bucket with a penalty box (``[udp.rate_limit]``)."""

    enabled: bool = True
    #: Datagrams per second a source may send, sustained, and in one burst.
    per_source_rate: float = 5000.0
    burst: int = 20_000
    #: How long a source over its budget is ignored.
    penalty_seconds: float = 10.0
    #: Sources remembered (least recently seen forgotten first).
    max_sources: int = 10_000


@dataclass(frozen=True, slots=True)
class UdpSettings:
    """``[udp]``: where datagrams are received, and the edge checks on each one."""

    listen: tuple[tuple[str, int], ...] = ((BRIDGE_HOST, BRIDGE_PORT),)
    #: Kernel receive buffer to ask for; a burst waits there while we work.
    receive_buffer: int = 32 * 1024 * 1024
    #: Let a second bridge bind the same port, for restarts that lose nothing.
    reuse_port: bool = True
    max_datagram: int = MAX_DATAGRAM
    #: Source networks allowed to send (CIDR); others are dropped (reason not_allowed).
    allow: tuple[str, ...] = LOOPBACK
    #: Shared secret of signed datagrams (HMAC-SHA256); never printed.
    secret: str | None = field(default=None, repr=False)
    require_signature: bool = False
    #: Seconds a signature stays valid, either side of our clock.
    signature_window: int = 300
    #: Recent signatures remembered to refuse replays.
    replay_memory: int = 100_000
    #: File keeping that memory across restarts (absolute path); None: memory only.
    replay_state_file: str | None = None
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """``[rooms]``: the MUC service, room names, the bridge's nick, and routing."""

    service: str
    room: str = DEFAULT_ROOM
    nick: str = PUBLISHER_NICK
    description: str = DEFAULT_DESCRIPTION
    #: Known wikis (default rooms), created and joined at startup, before their first change.
    wikis: tuple[str, ...] = ()
    #: Unknown-wiki policy, the all-wikis room, [wikis.NAME] overrides, filtered rooms.
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    #: Rooms the bridge creates for wikis the config does not name; past it their
    #: changes are refused (too_many_rooms), so a sender inventing wiki IDs cannot
    #: make the bridge open rooms without end.
    max_unknown_rooms: int = 2000


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """``[delivery]``: queues, pacing and the bounds that keep any input from
    exhausting the bridge. Each default is stated here only."""

    #: Changes held per room while the server is away; past it the oldest are dropped.
    queue_size: int = 100_000
    #: Every queue together, in bytes of encoded payload; past it new changes are refused.
    max_queued_bytes: int = 256 * 1024 * 1024
    #: Global outbound limits, kept under the server's own throttling (0: no limit).
    max_stanzas_per_second: float = 2000.0
    max_bytes_per_second: float = 4_000_000.0
    #: Changes sent into one room and not yet confirmed; sending waits past it. Bounds
    #: what a connection loss makes us resend, and how far we run ahead of the server.
    max_unconfirmed: int = 1000
    #: Opt-in for very busy rooms: up to this many queued changes share one message
    #: (each keeps its own <rc>; rcclient still yields them one by one). 1: never.
    changes_per_stanza: int = 1
    #: The largest message the bridge writes, escaping and both copies included; a
    #: change that would make a larger one is refused at intake (stanza_too_large).
    #: Below the server's limit: Prosody closes a c2s stream past 256 KiB.
    max_stanza_bytes: int = 192 * 1024
    #: Room entries (join, configure, verify) and self-pings in flight at once.
    max_iq_in_flight: int = 64
    #: Where changes set aside after two connection losses in a row are appended
    #: (JSON lines, to replay by hand); None: logged and counted only.
    dead_letter_file: str | None = None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The /metrics and /healthz listener (and the live page); off when `listen` is None."""

    listen: tuple[str, int] | None = None
    #: Seconds a client has to send a complete request (from connecting, or
    #: from its last response) before it is closed.
    request_timeout: float = 5.0
    #: Connections open at once; past it the oldest is closed to make room.
    max_connections: int = 64
    #: No connection stays open longer, whatever it is doing.
    max_connection_seconds: float = 60.0
    #: Serve the live-feed web page at ``/`` (``/web/...``) on this listener.
    page: bool = True
    #: The page's defaults (its query string overrides them): the XMPP WebSocket URL
    #: (ws:// or wss://), the anonymous domain it logs in to, the MUC service it
    #: lists (None: ``rooms.service``).
    page_websocket: str | None = None
    page_domain: str | None = None
    page_muc: str | None = None


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``: how and how much the bridge logs."""

    #: "auto" (JSON lines unless stderr is a terminal), "json" or "text".
    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    """``[subscriptions]``: personal watch lists, pushed as chat messages (off by default)."""

    enabled: bool = False
    #: The SQLite file (created if missing); a lock file beside it keeps a second bridge out.
    database: str | None = None
    #: Abuse caps: subscriptions per user, filters per user, per JID domain, in all.
    max_per_user: int = 50
    max_filters_per_user: int = 5
    #: Filters per wiki in all: each is tried on every change of its wiki.
    max_filters_per_wiki: int = 1000
    max_per_domain: int = 5000
    max_total: int = 1_000_000
    #: JID domains whose users may subscribe; empty: any.
    allow_domains: tuple[str, ...] = ()
    #: Per-user notifications per minute (sustained) and at once; past them, digests.
    rate_per_minute: float = 10.0
    burst: int = 10
    #: Seconds between digest messages, and the changes one digest lists.
    digest_interval: float = 300.0
    digest_max_items: int = 50
    #: At most this many seconds more, uniformly random, before each digest (0: none): so
    #: a digest's time tells an observer less about when on-wiki actions happened.
    digest_jitter: float = 0.0
    #: Changes a user gets per day; past it they are only counted.
    daily_limit: int = 1000
    #: Consecutive bounced notifications after which a JID's subscriptions are removed.
    bounce_limit: int = 3
    #: Commands per minute a JID may send (sustained, at once), and its penalty past them.
    command_rate_per_minute: float = 30.0
    command_burst: int = 10
    command_penalty: float = 60.0
    #: Notifications waiting to be sent (while the server is away); oldest dropped past it.
    queue_size: int = 10_000


#: Wikimedia's public stream of every change on every wiki (EventStreams).
EVENTSTREAMS_URL = "https://stream.wikimedia.org/v2/stream/recentchange"


@dataclass(frozen=True, slots=True)
class EventStreamsSettings:
    """``[eventstreams]``: changes read from an EventStreams server (Server-Sent Events)."""

    #: Any EventStreams-compatible server; several streams can share one connection
    #: (``/v2/stream/recentchange,page-create``); only recentchange events become changes.
    url: str = EVENTSTREAMS_URL
    #: Where the very first start begins (ISO 8601, or Unix milliseconds); None: now.
    #: Unused once a resume position is known (state_file).
    since: str | None = None
    #: The resume position (the last SSE id) and recent change ids, kept across restarts
    #: (written atomically); None: a restart begins at `since`, or now.
    state_file: str | None = None
    #: Seconds between writes of the state file (also written on stop).
    state_interval: float = 5.0
    #: No event and no comment for this long: the connection has stalled; reconnect.
    stall_seconds: float = 60.0
    #: Sent as ``User-Agent: <user_agent> (<contact>)``: Wikimedia's User-Agent policy
    #: asks for a way to reach the operator, so contact is required for its servers.
    user_agent: str = "xmlrc-udp2xmpp/0.1"
    contact: str | None = None
    #: CA that signed a private server's certificate; None: the system's CAs.
    ca_file: str | None = None
    #: Off only for a throwaway server on loopback; verification is the default.
    verify_tls: bool = True
    #: Allow and deny lists of wiki IDs: exact IDs or fnmatch patterns (``*wiktionary``).
    #: An empty allow list allows every wiki; the deny list wins.
    wikis: tuple[str, ...] = ()
    exclude_wikis: tuple[str, ...] = ()
    #: Change ids remembered to drop the overlap a resume may repeat.
    dedupe_memory: int = 100_000
    #: Wikis with their own label in the per-wiki metric (the first seen); the rest: "other".
    max_wiki_labels: int = 50
    #: An event larger than this is skipped (counted), so no event makes us buffer more.
    max_event_bytes: int = 1024 * 1024
    #: Seconds to connect and receive the response headers.
    connect_timeout: float = 30.0
    #: Delays before reconnecting after an error: doubling from backoff_initial to
    #: backoff_max, with jitter. The server's routine closes reconnect at once.
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: The longest Retry-After honoured (HTTP 429 or 503); a longer one waits this long.
    max_retry_after: float = 600.0


@dataclass(frozen=True, slots=True)
class PubSubSettings:
    """``[pubsub]``: every change also published as an item on PubSub nodes (off by default)."""

    enabled: bool = False
    #: The PubSub service (XEP-0060), e.g. pubsub.example.org.
    service: str | None = None
    #: Node name template (one node per wiki), and the all-wikis node ("": none).
    node: str = "{wiki}"
    all_node: str = "allwikis"
    #: Items each node keeps for subscribers coming back; persisted by the server.
    max_items: int = 100
    persist_items: bool = True
    #: Publishing pace: items per second, unanswered publishes at once, items waiting.
    max_per_second: float = 200.0
    window: int = 32
    queue_size: int = 10_000


REDIS_PASSWORD_ENV = "UDP2XMPP_REDIS_PASSWORD"  # noqa: S105 - a variable name, not a password
#: The URL schemes of [redis] url: plain TCP, or TLS.
REDIS_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """``[redis]``: the Redis pub/sub channels MediaWiki's RedisPubSubFeedEngine publishes to.

    Pub/sub keeps nothing: what is published while the bridge is not subscribed is lost.
    """

    #: ``redis://host:port/db`` or ``rediss://`` (TLS, verified against `ca_file`).
    url: str = "redis://127.0.0.1:6379/0"
    #: Channels to SUBSCRIBE to, and glob patterns to PSUBSCRIBE to (at least one in all).
    channels: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    #: ACL user (Redis 6+); None: the default user.
    username: str | None = None
    #: AUTH password; never printed.
    password: str | None = field(default=None, repr=False)
    #: CA that signed the server's certificate (rediss:// only); None: the system's CAs.
    ca_file: str | None = None


#: Config sections of the sources beside UDP; with one of them, ``udp.listen = []``
#: (no UDP at all) is allowed.
FEED_SECTIONS: tuple[str, ...] = ("eventstreams", "redis")


@dataclass(frozen=True, slots=True)
class PairSettings:
    """``[pair]``: a bridge pair. Another bridge (its own account, another machine)
    receives the same changes; in each room one of the two publishes, the one
    holding the publisher's nick, and the other stands by to take over."""

    #: The other bridge's account (bare JIDs): made an owner of every room, so it
    #: can take over. Empty: no pair.
    peers: tuple[str, ...] = ()
    #: This bridge's nick while it stands by; "" means ``{rooms.nick}~{xmpp.jid's user}``.
    standby_nick: str = ""
    #: A standby pings the publisher through each room this often (seconds); after
    #: `check_misses` unanswered pings in a row it bans it from the room and takes over.
    check_interval: float = 5.0
    check_misses: int = 2

    @property
    def enabled(self) -> bool:
        return bool(self.peers)


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """A whole validated config: one settings object per section, and where it came from."""

    xmpp: XmppSettings
    udp: UdpSettings
    rooms: RoomSettings
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    log: LogSettings = field(default_factory=LogSettings)
    subscriptions: SubscriptionSettings = field(default_factory=SubscriptionSettings)
    pubsub: PubSubSettings = field(default_factory=PubSubSettings)
    pair: PairSettings = field(default_factory=PairSettings)
    #: The EventStreams source; None when the config has no [eventstreams] section.
    eventstreams: EventStreamsSettings | None = None
    #: The Redis source; None when the config has no [redis] section.
    redis: RedisSettings | None = None
    source: str = "<memory>"


def load_config(path: str | os.PathLike[str]) -> BridgeConfig:
    """Read and validate a config file."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file}: not valid TOML: {exc}") from None
    return parse_config(data, base_dir=file.parent, source=str(file))


def parse_config(
    data: dict[str, Any], *, base_dir: Path = Path("."), source: str = "<memory>"
) -> BridgeConfig:
    reader = _Reader(data)
    known = {"xmpp", "udp", "rooms", "delivery", "wikis", "http", "log"}
    known |= {"eventstreams"}
    known |= {"subscriptions", "pubsub"}
    known |= {"redis", "pair"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(sorted(known))})")
    xmpp = reader.section("xmpp")
    jid_text = reader.text(xmpp, "xmpp.jid")
    mode = reader.opt_text(xmpp, "xmpp.mode") or settings_default(XmppSettings, "mode")
    if mode not in ("client", "component"):
        raise ConfigError(f'xmpp.mode: must be "client" or "component", got {mode!r}')
    try:
        jid = JID(jid_text)
    except InvalidJID as exc:
        raise ConfigError(f"xmpp.jid: not a valid JID: {exc}") from None
    if mode == "client" and not jid.user:
        raise ConfigError("xmpp.jid: needs a user part (user@domain)")
    if mode == "component" and (jid.user or jid.resource):
        raise ConfigError("xmpp.jid: in component mode, the component's domain alone")
    ca_file = reader.opt_text(xmpp, "xmpp.ca_file")
    if ca_file is not None:
        ca_path = (base_dir / ca_file).resolve()
        if not ca_path.is_file():
            raise ConfigError(f"xmpp.ca_file: no such file: {ca_path}")
        ca_file = str(ca_path)
    x = functools.partial(settings_default, XmppSettings)
    host = reader.opt_text(xmpp, "xmpp.host")
    port = reader.port(xmpp, "xmpp.port", x("port") if mode == "client" else COMPONENT_PORT)
    servers = _servers(xmpp)
    if servers:
        if "host" in xmpp or "port" in xmpp:
            raise ConfigError("xmpp.servers: give either servers or host/port, not both")
        host, port = servers[0]
    xmpp_settings = XmppSettings(
        jid=str(jid),
        password=_password(reader, xmpp, base_dir),
        host=host,
        port=port,
        servers=servers,
        ca_file=ca_file,
        verify_tls=reader.flag(xmpp, "xmpp.verify_tls", x("verify_tls")),
        mode=mode,
        component_user=reader.opt_text(xmpp, "xmpp.component_user") or x("component_user"),
        self_ping_interval=reader.number(
            xmpp, "xmpp.self_ping_interval", x("self_ping_interval"), low=1.0
        ),
        ping_timeout=reader.number(xmpp, "xmpp.ping_timeout", x("ping_timeout"), low=1.0),
    )
    reader.no_unknown(
        xmpp,
        "xmpp",
        {"jid", "password", "password_file", "password_env", "host", "port", "servers"}
        | {"ca_file", "verify_tls", "mode", "component_user", "self_ping_interval", "ping_timeout"},
    )

    udp = reader.section("udp", required=False)
    u = functools.partial(settings_default, UdpSettings)
    listen: tuple[tuple[str, int], ...] = u("listen")
    if "listen" in udp:
        listen_value = udp["listen"]
        listens = listen_value if isinstance(listen_value, list) else [listen_value]
        if not listens and not any(data.get(name) for name in FEED_SECTIONS):
            raise ConfigError(
                "udp.listen: needs at least one address (or another source: "
                + ", ".join(f"[{name}]" for name in FEED_SECTIONS)
                + ")"
            )
        listen = tuple(parse_hostport(item, "udp.listen") for item in listens)
    udp_settings = UdpSettings(
        listen=listen,
        receive_buffer=reader.integer(udp, "udp.receive_buffer", u("receive_buffer"), low=65536),
        reuse_port=reader.flag(udp, "udp.reuse_port", u("reuse_port")),
        max_datagram=reader.integer(
            udp, "udp.max_datagram", u("max_datagram"), low=512, high=MAX_DATAGRAM
        ),
        **_udp_edge(reader, udp, base_dir),
    )
    reader.no_unknown(
        udp, "udp", {"listen", "receive_buffer", "reuse_port", "max_datagram"} | _UDP_EDGE_KEYS
    )

    rooms = reader.section("rooms")
    r = functools.partial(settings_default, RoomSettings)
    template = reader.opt_text(rooms, "rooms.room") or r("room")
    if "{wiki}" not in template:
        raise ConfigError("rooms.room: the template must contain {wiki}")
    try:
        template.format(wiki="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"rooms.room: bad template: {exc}") from None
    service = reader.text(rooms, "rooms.service")
    if "@" in service or "/" in service:
        raise ConfigError("rooms.service: a MUC service domain, like conference.example.org")
    room_description = reader.opt_text(rooms, "rooms.description") or r("description")
    known_wikis = _wiki_list(rooms.get("wikis", []), "rooms.wikis")
    try:
        routing = parse_routing(
            rooms,
            data.get("wikis"),
            service=service,
            template=template,
            description=room_description,
            known_wikis=known_wikis,
        )
    except RoutingConfigError as exc:
        raise ConfigError(str(exc)) from None
    room_settings = RoomSettings(
        service=service,
        room=template,
        nick=reader.opt_text(rooms, "rooms.nick") or r("nick"),
        description=room_description,
        wikis=known_wikis,
        routing=routing,
        max_unknown_rooms=reader.integer(
            rooms, "rooms.max_unknown_rooms", r("max_unknown_rooms"), low=0
        ),
    )
    reader.no_unknown(
        rooms,
        "rooms",
        {"service", "room", "nick", "description", "wikis", "max_unknown_rooms"} | ROOMS_KEYS,
    )

    delivery_settings = _delivery_settings(reader, base_dir)
    return BridgeConfig(
        xmpp=xmpp_settings,
        udp=udp_settings,
        rooms=room_settings,
        delivery=delivery_settings,
        http=_http_settings(reader),
        log=_log_settings(reader),
        subscriptions=_subscription_settings(reader, base_dir),
        pubsub=_pubsub_settings(reader),
        eventstreams=_eventstreams_settings(reader, base_dir),
        redis=_redis_settings(reader, base_dir),
        pair=_pair_settings(reader, xmpp_settings, room_settings),
        source=source,
    )


def _pair_settings(reader: _Reader, xmpp: XmppSettings, rooms: RoomSettings) -> PairSettings:
    section = reader.section("pair", required=False)
    reader.no_unknown(section, "pair", {"peers", "standby_nick", "check_interval", "check_misses"})
    value = section.get("peers", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"pair.peers: expected a list of bare JIDs, got {value!r}")
    own = JID(xmpp.jid).bare
    peers = []
    for text in value:
        try:
            peer = JID(text)
        except InvalidJID as exc:
            raise ConfigError(f"pair.peers: not a valid JID {text!r}: {exc}") from None
        if not peer.user or peer.resource:
            raise ConfigError(f"pair.peers: {text!r}: a bare account JID, user@domain")
        if peer.bare == own:
            # One account twice: Prosody lets two sessions of an account share a nick.
            raise ConfigError(f"pair.peers: {text!r} is this bridge's own account")
        peers.append(peer.bare)
    standby = reader.opt_text(section, "pair.standby_nick") or ""
    if peers:
        if xmpp.mode != "client":
            raise ConfigError("pair.peers: a bridge pair runs in client mode (xmpp.mode)")
        standby = standby or f"{rooms.nick}~{JID(xmpp.jid).user}"
        if standby == rooms.nick:
            raise ConfigError("pair.standby_nick: must differ from rooms.nick")
    p = functools.partial(settings_default, PairSettings)
    return PairSettings(
        peers=tuple(dict.fromkeys(peers)),
        standby_nick=standby,
        check_interval=reader.number(section, "pair.check_interval", p("check_interval"), low=0.5),
        check_misses=reader.integer(section, "pair.check_misses", p("check_misses"), low=1),
    )


_UDP_EDGE_KEYS = {"allow", "secret", "secret_file", "secret_env", "require_signature"} | {
    "signature_window",
    "replay_memory",
    "replay_state_file",
    "rate_limit",
}
LOG_FORMATS = ("auto", "json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _udp_edge(reader: _Reader, udp: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The [udp] keys of the edge: allow, secret, require_signature, rate_limit."""
    u = functools.partial(settings_default, UdpSettings)
    allow_value = udp.get("allow", list(u("allow")))
    if isinstance(allow_value, str):
        allow_value = [allow_value]
    if not isinstance(allow_value, list) or not all(isinstance(a, str) for a in allow_value):
        raise ConfigError('udp.allow: must be a list of networks, like ["10.0.0.0/8"]')
    allow = []
    for item in allow_value:
        try:
            allow.append(str(parse_network(item)))
        except ValueError:
            raise ConfigError(f"udp.allow: {item!r} is not a network (CIDR)") from None
    secret = _udp_secret(reader, udp, base_dir)
    require = reader.flag(udp, "udp.require_signature", u("require_signature"))
    if require and secret is None:
        raise ConfigError("udp.require_signature: needs udp.secret (or secret_file, secret_env)")
    limits = udp.get("rate_limit", {})
    if not isinstance(limits, dict):
        raise ConfigError("udp.rate_limit: must be a table [udp.rate_limit]")
    rl = functools.partial(settings_default, RateLimitSettings)
    key = "udp.rate_limit."
    rate_limit = RateLimitSettings(
        enabled=reader.flag(limits, key + "enabled", rl("enabled")),
        per_source_rate=reader.number(
            limits, key + "per_source_rate", rl("per_source_rate"), low=0.001
        ),
        burst=reader.integer(limits, key + "burst", rl("burst"), low=1),
        penalty_seconds=reader.number(limits, key + "penalty_seconds", rl("penalty_seconds")),
        max_sources=reader.integer(limits, key + "max_sources", rl("max_sources"), low=1),
    )
    reader.no_unknown(
        limits,
        "udp.rate_limit",
        {"enabled", "per_source_rate", "burst", "penalty_seconds", "max_sources"},
    )
    return {
        "allow": tuple(allow),
        "secret": secret,
        "require_signature": require,
        "signature_window": reader.integer(
            udp, "udp.signature_window", u("signature_window"), low=1, high=86400
        ),
        "replay_memory": reader.integer(udp, "udp.replay_memory", u("replay_memory"), low=1),
        "replay_state_file": _replay_state_file(reader, udp, base_dir, secret),
        "rate_limit": rate_limit,
    }


def _replay_state_file(
    reader: _Reader, udp: dict[str, Any], base_dir: Path, secret: str | None
) -> str | None:
    """udp.replay_state_file, resolved against the config's directory; its directory must exist."""
    name = reader.opt_text(udp, "udp.replay_state_file")
    if name is None:
        return None
    if secret is None:
        raise ConfigError("udp.replay_state_file: needs udp.secret (it remembers signatures)")
    path = (base_dir / name).resolve()
    if not path.parent.is_dir():
        raise ConfigError(f"udp.replay_state_file: no such directory: {path.parent}")
    return str(path)


def _udp_secret(reader: _Reader, udp: dict[str, Any], base_dir: Path) -> str | None:
    """udp.secret, udp.secret_file, udp.secret_env, or the UDP2XMPP_SECRET variable if set."""
    given = [k for k in ("secret", "secret_file", "secret_env") if k in udp]
    if len(given) > 1:
        raise ConfigError(f"udp.{given[1]}: give only one of secret, secret_file, secret_env")
    if "secret" in udp:
        value = reader.text(udp, "udp.secret")
        where = "udp.secret"
    elif "secret_file" in udp:
        path = base_dir / reader.text(udp, "udp.secret_file")
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"udp.secret_file: {path}: {exc.strerror}") from None
        where = "udp.secret_file"
    else:
        env_name = reader.opt_text(udp, "udp.secret_env")
        value = os.environ.get(env_name or SECRET_ENV, "")
        if not value:
            if env_name:
                raise ConfigError(f"udp.secret_env: the variable {env_name} is not set")
            return None
        where = "udp.secret_env" if env_name else f"the {SECRET_ENV} variable"
    if len(value.encode("utf-8")) < 16:
        raise ConfigError(
            f"{where}: the secret is too short (16 bytes at least; try: openssl rand -hex 32)"
        )
    return value


def _delivery_settings(reader: _Reader, base_dir: Path) -> DeliverySettings:
    delivery = reader.section("delivery", required=False)
    d = functools.partial(settings_default, DeliverySettings)
    dead_letter = reader.opt_text(delivery, "delivery.dead_letter_file")
    settings = DeliverySettings(
        queue_size=reader.integer(delivery, "delivery.queue_size", d("queue_size"), low=1),
        max_queued_bytes=reader.integer(
            delivery, "delivery.max_queued_bytes", d("max_queued_bytes"), low=1024 * 1024
        ),
        max_stanzas_per_second=reader.number(
            delivery, "delivery.max_stanzas_per_second", d("max_stanzas_per_second"), low=0.0
        ),
        max_bytes_per_second=reader.number(
            delivery, "delivery.max_bytes_per_second", d("max_bytes_per_second"), low=0.0
        ),
        max_unconfirmed=reader.integer(
            delivery, "delivery.max_unconfirmed", d("max_unconfirmed"), low=1
        ),
        changes_per_stanza=reader.integer(
            delivery, "delivery.changes_per_stanza", d("changes_per_stanza"), low=1, high=100
        ),
        max_stanza_bytes=reader.integer(
            delivery, "delivery.max_stanza_bytes", d("max_stanza_bytes"), low=16384, high=1 << 24
        ),
        max_iq_in_flight=reader.integer(
            delivery, "delivery.max_iq_in_flight", d("max_iq_in_flight"), low=1, high=10_000
        ),
        dead_letter_file=str((base_dir / dead_letter).resolve()) if dead_letter else None,
    )
    reader.no_unknown(delivery, "delivery", {f.name for f in fields(DeliverySettings)})
    return settings


def _http_settings(reader: _Reader) -> HttpSettings:
    http = reader.section("http", required=False)
    h = functools.partial(settings_default, HttpSettings)
    reader.no_unknown(http, "http", {f.name for f in fields(HttpSettings)})
    websocket = reader.opt_text(http, "http.page_websocket") or None
    if websocket is not None and not re.fullmatch(r"wss?://[^\s\"'<>]+", websocket):
        raise ConfigError(f"http.page_websocket: a ws:// or wss:// URL, got {websocket!r}")
    return HttpSettings(
        listen=parse_hostport(http["listen"], "http.listen") if "listen" in http else None,
        request_timeout=reader.number(http, "http.request_timeout", h("request_timeout"), low=0.1),
        max_connections=reader.integer(
            http, "http.max_connections", h("max_connections"), low=1, high=100_000
        ),
        max_connection_seconds=reader.number(
            http, "http.max_connection_seconds", h("max_connection_seconds"), low=1.0
        ),
        page=reader.flag(http, "http.page", h("page")),
        page_websocket=websocket,
        page_domain=reader.opt_text(http, "http.page_domain") or None,
        page_muc=reader.opt_text(http, "http.page_muc") or None,
    )


_EVENTSTREAMS_KEYS = {f.name for f in fields(EventStreamsSettings)}
#: Hosts whose User-Agent policy asks for a contact.
_WIKIMEDIA_HOSTS = ("wikimedia.org", "wikipedia.org")
#: A wiki ID or an fnmatch pattern of one.
_WIKI_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,64}")


def _eventstreams_settings(reader: _Reader, base_dir: Path) -> EventStreamsSettings | None:
    """[eventstreams], or None without the section."""
    if "eventstreams" not in reader.data:
        return None
    section = reader.section("eventstreams")
    reader.no_unknown(section, "eventstreams", _EVENTSTREAMS_KEYS)
    e = functools.partial(settings_default, EventStreamsSettings)
    key = "eventstreams."
    url = reader.opt_text(section, key + "url") or e("url")
    parsed = urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigError(f"{key}url: the http(s) URL of a stream, got {url!r}")
    host = parsed.hostname.lower()
    contact = reader.opt_text(section, key + "contact")
    if any(host == h or host.endswith("." + h) for h in _WIKIMEDIA_HOSTS) and not contact:
        raise ConfigError(
            f"{key}contact: required for {host} (Wikimedia's User-Agent policy: "
            "an email address or a URL where you can be reached)"
        )
    if contact is not None and any(c in contact for c in "\r\n()"):
        raise ConfigError(f"{key}contact: one line, without parentheses")
    user_agent = reader.opt_text(section, key + "user_agent") or e("user_agent")
    if any(c in user_agent for c in "\r\n"):
        raise ConfigError(f"{key}user_agent: one line")
    since = section.get("since")
    if isinstance(since, int) and not isinstance(since, bool) and since >= 0:
        since = str(since)
    if since is not None and not (isinstance(since, str) and since.isdigit()):
        try:
            utc_from_iso(since)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{key}since: an ISO 8601 time with its zone (2026-01-02T03:04:05Z) "
                f"or Unix milliseconds, got {since!r}"
            ) from None
    paths: dict[str, str | None] = {}
    for name in ("state_file", "ca_file"):
        given = reader.opt_text(section, key + name)
        path = None if given is None else (base_dir / given).resolve()
        if name == "state_file" and path is not None and not path.parent.is_dir():
            raise ConfigError(f"{key}state_file: no such directory: {path.parent}")
        if name == "ca_file" and path is not None and not path.is_file():
            raise ConfigError(f"{key}ca_file: no such file: {path}")
        paths[name] = None if path is None else str(path)

    def number(name: str, low: float) -> float:
        return reader.number(section, key + name, e(name), low=low)

    def count(name: str, low: int, high: int) -> int:
        return reader.integer(section, key + name, e(name), low=low, high=high)

    backoff_initial = number("backoff_initial", 0.01)
    backoff_max = number("backoff_max", 0.01)
    if backoff_max < backoff_initial:
        raise ConfigError(f"{key}backoff_max: at least backoff_initial ({backoff_initial:g})")
    return EventStreamsSettings(
        url=url,
        since=since,
        state_file=paths["state_file"],
        state_interval=number("state_interval", 0.1),
        stall_seconds=number("stall_seconds", 0.1),
        user_agent=user_agent,
        contact=contact,
        ca_file=paths["ca_file"],
        verify_tls=reader.flag(section, key + "verify_tls", e("verify_tls")),
        wikis=_wiki_patterns(section.get("wikis", []), key + "wikis"),
        exclude_wikis=_wiki_patterns(section.get("exclude_wikis", []), key + "exclude_wikis"),
        dedupe_memory=count("dedupe_memory", 1, 10_000_000),
        max_wiki_labels=count("max_wiki_labels", 0, 10_000),
        max_event_bytes=count("max_event_bytes", 4096, 64 * 1024 * 1024),
        connect_timeout=number("connect_timeout", 0.1),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        max_retry_after=number("max_retry_after", 0.0),
    )


def _wiki_patterns(value: Any, key: str) -> tuple[str, ...]:
    """Wiki IDs, or fnmatch patterns of them (``*wiki``, ``en*``, ``[a-c]*wiki``)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f'{key}: a list of wiki IDs or patterns, like ["enwiki", "*wiktionary"]')
    for item in value:
        if not _WIKI_PATTERN.fullmatch(item):
            raise ConfigError(f"{key}: {item!r} is not a wiki ID or a pattern of one")
    return tuple(value)


def _log_settings(reader: _Reader) -> LogSettings:
    section = reader.section("log", required=False)
    reader.no_unknown(section, "log", {"format", "level"})
    fmt = reader.opt_text(section, "log.format") or settings_default(LogSettings, "format")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log.format: one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    level = reader.opt_text(section, "log.level") or settings_default(LogSettings, "level")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log.level: one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return LogSettings(format=fmt, level=level)


_SUBSCRIPTION_KEYS = {f.name for f in fields(SubscriptionSettings)}
_PUBSUB_KEYS = {f.name for f in fields(PubSubSettings)}


def _subscription_settings(reader: _Reader, base_dir: Path) -> SubscriptionSettings:
    section = reader.section("subscriptions", required=False)
    reader.no_unknown(section, "subscriptions", _SUBSCRIPTION_KEYS)
    s = functools.partial(settings_default, SubscriptionSettings)
    enabled = reader.flag(section, "subscriptions.enabled", s("enabled"))
    database = reader.opt_text(section, "subscriptions.database")
    if database is not None:
        database = str((base_dir / database).resolve())
        if Path(database).is_dir():
            raise ConfigError(f"subscriptions.database: {database} is a directory, not a file")
    elif enabled:
        raise ConfigError(
            "subscriptions.database: required when enabled "
            "(a file, e.g. /var/lib/udp2xmpp/subscriptions.sqlite)"
        )
    domains = section.get("allow_domains", list(s("allow_domains")))
    if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
        raise ConfigError('subscriptions.allow_domains: a list of domains, like ["example.org"]')
    key = "subscriptions."

    def count(name: str, low: int = 1) -> int:
        return reader.integer(section, key + name, s(name), low=low)

    def number(name: str, low: float) -> float:
        return reader.number(section, key + name, s(name), low=low)

    jitter = number("digest_jitter", 0.0)
    if jitter > 86400:
        raise ConfigError(f"{key}digest_jitter: at most 86400 seconds (a day), got {jitter:g}")
    return SubscriptionSettings(
        enabled=enabled,
        database=database,
        max_per_user=count("max_per_user"),
        max_filters_per_user=count("max_filters_per_user", low=0),
        max_filters_per_wiki=count("max_filters_per_wiki", low=0),
        max_per_domain=count("max_per_domain"),
        max_total=count("max_total"),
        allow_domains=tuple(d.lower() for d in domains),
        rate_per_minute=number("rate_per_minute", 0.01),
        burst=count("burst"),
        digest_interval=number("digest_interval", 0.1),
        digest_max_items=count("digest_max_items"),
        digest_jitter=jitter,
        daily_limit=count("daily_limit"),
        bounce_limit=count("bounce_limit"),
        command_rate_per_minute=number("command_rate_per_minute", 0.01),
        command_burst=count("command_burst"),
        command_penalty=number("command_penalty", 0.0),
        queue_size=count("queue_size"),
    )


def _pubsub_settings(reader: _Reader) -> PubSubSettings:
    section = reader.section("pubsub", required=False)
    reader.no_unknown(section, "pubsub", _PUBSUB_KEYS)
    p = functools.partial(settings_default, PubSubSettings)
    enabled = reader.flag(section, "pubsub.enabled", p("enabled"))
    service = reader.opt_text(section, "pubsub.service")
    if service is None and enabled:
        raise ConfigError("pubsub.service: required when enabled (e.g. pubsub.example.org)")
    if service is not None and ("@" in service or "/" in service):
        raise ConfigError("pubsub.service: a PubSub service domain, like pubsub.example.org")
    node = reader.opt_text(section, "pubsub.node") or p("node")
    try:
        example = node.format(wiki="enwiki").lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"pubsub.node: bad template: {exc}") from None
    if "{wiki}" not in node or not ROOM_NAME.fullmatch(example):
        raise ConfigError(
            "pubsub.node: a template with {wiki} giving lower-case letters, digits, '.', '_', '-'"
        )
    all_node = reader.opt_text(section, "pubsub.all_node")
    all_node = p("all_node") if all_node is None else all_node
    if all_node and not ROOM_NAME.fullmatch(all_node):
        raise ConfigError(f"pubsub.all_node: {all_node!r} is not an allowed node name")
    return PubSubSettings(
        enabled=enabled,
        service=service,
        node=node,
        all_node=all_node,
        max_items=reader.integer(section, "pubsub.max_items", p("max_items"), low=1, high=100_000),
        persist_items=reader.flag(section, "pubsub.persist_items", p("persist_items")),
        max_per_second=reader.number(
            section, "pubsub.max_per_second", p("max_per_second"), low=0.1
        ),
        window=reader.integer(section, "pubsub.window", p("window"), low=1, high=10_000),
        queue_size=reader.integer(section, "pubsub.queue_size", p("queue_size"), low=1),
    )


_REDIS_KEYS = {f.name for f in fields(RedisSettings)} | {"password_file", "password_env"}


def _redis_settings(reader: _Reader, base_dir: Path) -> RedisSettings | None:
    """[redis], or None without the section."""
    if "redis" not in reader.data:
        return None
    section = reader.section("redis")
    reader.no_unknown(section, "redis", _REDIS_KEYS)
    url = reader.opt_text(section, "redis.url") or settings_default(RedisSettings, "url")
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    if not sep or scheme not in REDIS_SCHEMES or not host:
        raise ConfigError(
            f"redis.url: redis://host:port/db or rediss://host:port/db (TLS), got {url!r}"
        )
    if "@" in rest.split("/", 1)[0]:
        raise ConfigError(
            "redis.url: no credentials in the URL: use redis.username, redis.password"
        )
    database = rest.partition("/")[2]
    if database and not database.isdigit():
        raise ConfigError(f"redis.url: the path is a database number (/0), got /{database}")
    names = {}
    for key in ("channels", "patterns"):
        value = section.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f'redis.{key}: a list of names, like ["rc"]')
        names[key] = tuple(dict.fromkeys(value))
    if not names["channels"] and not names["patterns"]:
        raise ConfigError(
            'redis.channels: give at least one channel (or redis.patterns), like ["rc"]'
        )
    ca_file = reader.opt_text(section, "redis.ca_file")
    if ca_file is not None:
        if scheme != "rediss":
            raise ConfigError("redis.ca_file: only with a rediss:// (TLS) url")
        ca_path = (base_dir / ca_file).resolve()
        if not ca_path.is_file():
            raise ConfigError(f"redis.ca_file: no such file: {ca_path}")
        ca_file = str(ca_path)
    return RedisSettings(
        url=url,
        channels=names["channels"],
        patterns=names["patterns"],
        username=reader.opt_text(section, "redis.username") or None,
        password=_redis_password(reader, section, base_dir),
        ca_file=ca_file,
    )


def _redis_password(reader: _Reader, section: dict[str, Any], base_dir: Path) -> str | None:
    """redis.password, password_file, password_env, or UDP2XMPP_REDIS_PASSWORD if set."""
    given = [k for k in ("password", "password_file", "password_env") if k in section]
    if len(given) > 1:
        raise ConfigError(
            f"redis.{given[1]}: give only one of password, password_file, password_env"
        )
    if "password" in section:
        return reader.text(section, "redis.password")
    if "password_file" in section:
        path = base_dir / reader.text(section, "redis.password_file")
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"redis.password_file: {path}: {exc.strerror}") from None
    env_name = reader.opt_text(section, "redis.password_env")
    value = os.environ.get(env_name or REDIS_PASSWORD_ENV)
    if env_name and not value:
        raise ConfigError(f"redis.password_env: the variable {env_name} is not set")
    return value or None


def _servers(xmpp: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """``xmpp.servers``: a list of distinct "host:port" strings (empty: host/port)."""
    value = xmpp.get("servers", [])
    if not isinstance(value, list):
        raise ConfigError(f'xmpp.servers: expected a list of "host:port", got {value!r}')
    servers = tuple(parse_hostport(item, "xmpp.servers") for item in value)
    if len(set(servers)) != len(servers):
        raise ConfigError("xmpp.servers: a server is listed twice")
    return servers


def parse_hostport(value: Any, key: str) -> tuple[str, int]:
    """``"127.0.0.1:9390"`` or ``"[::1]:9390"`` to (host, port)."""
    if not isinstance(value, str):
        raise ConfigError(f'{key}: expected "host:port", got {value!r}')
    try:
        return split_hostport(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _wiki_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: must be a list of wiki IDs")
    for item in value:
        if not WIKI_ID.fullmatch(item):
            raise ConfigError(f"{key}: {item!r} is not a valid wiki ID")
    return tuple(value)


def _password(reader: _Reader, xmpp: dict[str, Any], base_dir: Path) -> str:
    given = [k for k in ("password", "password_file", "password_env") if k in xmpp]
    if len(given) > 1:
        raise ConfigError(
            f"xmpp.{given[1]}: give only one of password, password_file, password_env"
        )
    if "password" in xmpp:
        return reader.text(xmpp, "xmpp.password")
    if "password_file" in xmpp:
        path = base_dir / reader.text(xmpp, "xmpp.password_file")
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"xmpp.password_file: {path}: {exc.strerror}") from None
    env_name = reader.opt_text(xmpp, "xmpp.password_env") or PASSWORD_ENV
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(
            f"xmpp.password: not set (give password, password_file, or the {env_name} variable)"
        )
    return value


def settings_default(cls: type, name: str) -> Any:
    """A settings field's default, as its dataclass states it (the one place it is said).

    Also for the constructors of the parts configured by a section, so their own
    defaults cannot drift from the config's.
    """
    spec = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")


class _Reader:
    """Typed access to TOML tables, with errors that name the key."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def section(self, name: str, *, required: bool = True) -> dict[str, Any]:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigError(f"{name}: missing section [{name}]")
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: must be a table [{name}]")
        return value

    def text(self, table: dict[str, Any], key: str) -> str:
        value = self.opt_text(table, key)
        if not value:
            raise ConfigError(f"{key}: required")
        return value

    def opt_text(self, table: dict[str, Any], key: str) -> str | None:
        value = table.get(key.rsplit(".", 1)[-1])
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value

    def integer(
        self, table: dict[str, Any], key: str, default: int, *, low: int = 0, high: int = 2**62
    ) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
        return value

    def number(self, table: dict[str, Any], key: str, default: float, *, low: float = 0.0) -> float:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        if value < low:
            raise ConfigError(f"{key}: must be at least {low}, got {value}")
        return float(value)

    def port(self, table: dict[str, Any], key: str, default: int) -> int:
        return self.integer(table, key, default, low=1, high=65535)

    def flag(self, table: dict[str, Any], key: str, default: bool) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value

    def no_unknown(self, table: dict[str, Any], section: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown key")
