-- Prosody 0.12 for xmlrc in production: one host for the bridge's (and the
-- readers') accounts, a MUC service whose rooms are archived (XEP-0313) in SQL,
-- stream management for the bridge, no throttling of the bridge.
--
-- Install: apt-get install prosody lua-dbi-postgresql (or lua-dbi-sqlite3), copy
-- this to /etc/prosody/prosody.cfg.lua, replace example.org, then:
--   prosodyctl check config
--   prosodyctl adduser rcbot@example.org        # the bridge's account (xmpp.jid)
--   systemctl restart prosody

admins = { "admin@example.org" }

-- Modules for every host. mod_smacks is XEP-0198: the bridge resends what the
-- server did not acknowledge. mod_limits throttles clients; the bridge is
-- exempt below (unlimited_jids), readers stay throttled.
modules_enabled = {
	"roster"; "saslauth"; "tls"; "dialback"; "disco";
	"ping";           -- XEP-0199 keepalives
	"smacks";         -- XEP-0198 stream management (shipped with 0.12)
	"carbons"; "blocklist"; "vcard4"; "private";
	"mam";            -- personal archives (rooms use muc_mam, below)
	"csi_simple";     -- batches traffic to idle mobile readers
	"limits";         -- per-connection rate limits, see below
	"websocket";      -- XMPP over WebSocket (RFC 7395) for the browser page: /xmpp-websocket
	"bosh";           -- BOSH (XEP-0124/0206), the browser page's fallback: /http-bind
	"version"; "uptime"; "time";
	"admin_shell";    -- prosodyctl shell
	-- "http_openmetrics";  -- Prosody's own /metrics, next to the bridge's (and the
	                        -- statistics lines below; examples/prometheus.yml scrapes it)
}
-- With http_openmetrics: without a statistics provider /metrics answers 404.
-- statistics = "internal"
-- statistics_interval = "manual"            -- collected at each scrape
-- openmetrics_allow_ips = { "127.0.0.1"; "::1" }  -- who may scrape (the default)
modules_disabled = { "offline" }  -- rooms are archived; nobody needs offline messages

-- Accounts: created by the operator (prosodyctl adduser), never by strangers.
allow_registration = false
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = true

-- Storage: SQL for everything, so room archives survive restarts and can be large.
storage = "sql"
sql = {
	driver = "PostgreSQL"; database = "prosody"; username = "prosody";
	password = "change me"; host = "localhost";
}
-- Smaller installations: sql = { driver = "SQLite3"; database = "prosody.sqlite" }

-- Throttling: readers are limited, the bridge is not (a busy wiki farm sends
-- thousands of changes a minute; a throttled bridge would fall behind and its
-- queues would overflow). The bridge also paces itself (delivery.max_*).
limits = {
	c2s = { rate = "10kb/s"; burst = "2s" };
	s2sin = { rate = "30kb/s"; burst = "2s" };
}
unlimited_jids = { "rcbot@example.org" }

-- Stream management: how long a dropped session waits to be resumed, with what
-- was not acknowledged yet (the bridge resumes instead of logging in again).
smacks_hibernation_time = 600
-- The server's queue of unacknowledged stanzas *to* a client: the bridge gets an
-- echo of every message it sends into a room, so give it room for a burst.
smacks_max_queue_size = 10000

archive_expires_after = "1w"        -- personal archives (mod_mam)

-- The browser page (udp2xmpp/web/) reads the public rooms over WebSocket, or BOSH
-- where WebSocket is blocked. Prosody serves both on its HTTP port, on loopback
-- only; a TLS reverse proxy (nginx, Caddy) answers on 443 and forwards
-- https://example.org/xmpp-websocket and /http-bind to it, nothing else.
-- Exposed on the internet: 443 (those two paths), 5269 only if you federate,
-- 5222 only if people read with XMPP apps. On loopback: this HTTP port, the
-- bridge's component port (5347), the bridge's ops listener ([http] in
-- bridge.toml), and 5222 too if only browsers read (then c2s_interfaces = { "127.0.0.1" }).
http_ports = { 5280 }
http_interfaces = { "127.0.0.1", "::1" }
https_ports = { }                   -- TLS is the proxy's; or drop the proxy and use 5281
consider_websocket_secure = true    -- the proxy speaks TLS to the browser
consider_bosh_secure = true
trusted_proxies = { "127.0.0.1", "::1" }  -- log the browser's address, not the proxy's
-- CORS for BOSH when the page is served from another origin (WebSocket needs none).
access_control_allow_origins = { "https://example.org" }
http_max_content_size = 65536       -- a BOSH request body; readers send little
c2s_stanza_size_limit = 262144      -- also caps a WebSocket frame (2x this) and a BOSH body
bosh_max_inactivity = 60            -- a BOSH session nobody polls ends after a minute

certificates = "certs"              -- /etc/prosody/certs (prosodyctl cert import /etc/letsencrypt/live)

log = {
	info = "/var/log/prosody/prosody.log";
	error = "/var/log/prosody/prosody.err";
}
pidfile = "/run/prosody/prosody.pid"

VirtualHost "example.org"

-- Browser readers without an account: SASL ANONYMOUS, a throwaway JID per visit.
-- They may join public rooms (and read their archives); they cannot speak in the
-- bridge's rooms (moderated: visitors have no voice), cannot create rooms
-- (restrict_room_creation below: not an admin), cannot enter members-only rooms
-- (not members), cannot register, and reach no other server. mod_limits is per
-- connection type, not per host: the c2s rate above (10 kB/s, 2 s burst) applies
-- to every anonymous session (WebSocket sessions are c2s too: tested; BOSH not
-- tested); the bridge is exempt by unlimited_jids. Prosody 0.12 has no per-address connection
-- cap: let the proxy count (nginx: limit_conn, limit_req on /xmpp-websocket and /http-bind).
VirtualHost "anon.example.org"
	authentication = "anonymous"
	allow_registration = false
	modules_disabled = { "register"; "s2s"; "mam"; "vcard4"; "private"; "offline" }
	allow_anonymous_s2s = false       -- no messages to or from other servers
	allow_anonymous_storage = false   -- nothing kept for a throwaway JID

-- The rooms. The bridge creates and configures its rooms itself (persistent,
-- moderated so only it speaks, archived, described); these are the defaults
-- and limits of the service.
Component "conference.example.org" "muc"
	modules_enabled = {
		"muc_mam";      -- XEP-0313 room archives: readers catch up on what they missed
		"muc_unique";   -- unique room names for clients that ask
	}
	-- Only the bridge creates rooms. ("local" would let EVERY account of example.org
	-- create one, and a room created first by someone else is theirs: unmoderated,
	-- anyone could post forged changes there. The bridge refuses such a room.)
	-- Admins of this component may create rooms and own every room on it.
	restrict_room_creation = true
	admins = { "rcbot@example.org" }
	muc_room_locking = false          -- a created room is usable at once (the bridge configures it)
	muc_room_default_persistent = true
	muc_room_default_public = true
	muc_room_default_moderated = true -- visitors read, only the bridge (owner) has voice
	muc_room_default_change_subject = false
	muc_log_by_default = true         -- archive every room...
	muc_log_all_rooms = true          -- ...whatever its configuration says
	muc_log_expires_after = "1w"      -- how far back a reader can catch up
	max_archive_query_results = 500   -- MAM page size for readers catching up
	max_history_messages = 50         -- the most a room's join history may hold
	muc_room_default_history_length = 20

-- XEP-0114 component for the bridge's component mode (xmpp.mode = "component",
-- xmpp.jid = "rc.example.org", xmpp.password = its component_secret, port 5347).
-- Only needed for very high volume; client mode is the default.
-- component_ports = { 5347 }
-- component_interfaces = { "127.0.0.1" }
-- Component "rc.example.org"
-- 	component_secret = "change me too"
