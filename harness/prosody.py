"""A throwaway Prosody XMPP server for the tests, the demo and the benchmarks.

This module is responsible for one thing: bringing up a private, disposable
Prosody instance on loopback and tearing it down again.  :class:`ProsodyServer`

* picks free loopback TCP ports for client (c2s) and component connections,
* writes a self-signed certificate (which doubles as the CA file clients
  verify against) and a Prosody configuration into a working directory,
* registers accounts with ``prosodyctl`` (before or after the server runs),
* runs ``prosody -F`` in the foreground as a child process and waits until
  it accepts connections, and
* stops, kills, restarts, freezes and thaws that process for fault tests.

The server has one virtual host (``localhost``), a MUC service
(``conference.localhost``) whose rooms are unlocked, persistent and logged
to MAM, and an XEP-0114 external component (``rc.localhost``) for the
bridge.  Server-to-server traffic and ``mod_limits`` are disabled.

It uses only the standard library and no threads, so it can be driven from
synchronous code and from inside a running asyncio loop alike (its blocking
waits are short and bounded).  It is not meant for production deployments.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Literal

from .throwaway import ThrowawayServer

__all__ = ["ProsodyError", "ProsodyServer"]

MucLogStorage = Literal["memory", "sql"]

_NOT_INSTALLED = "prosody is not installed: run `make test` or apt-get install prosody"


class ProsodyError(RuntimeError):
    """Prosody could not be configured, started or driven as asked."""


class _PortTakenError(ProsodyError):
    """Another process holds one of the ports Prosody was told to bind."""


def _lua_str(value: str) -> str:
    """Quote ``value`` as a Lua string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _free_ports(host: str, count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on ``host`` that are free right now.

    The sockets are held open together so the kernel hands out distinct
    ports, then closed so Prosody can bind them.  Another process could in
    principle take one in between; on loopback in a test run that is rare.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stream_answers(host: str, port: int, domain: str, timeout: float = 1.0) -> bool:
    """Whether an XMPP client stream header on ``host:port`` gets a stream back."""
    header = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(header.encode())
            return b"stream" in sock.recv(4096)
    except OSError:
        return False


class ProsodyServer(ThrowawayServer):
    """A private Prosody instance on loopback, run as a child process.

    Typical use::

        with ProsodyServer() as server:      # starts; stops on exit
            server.add_user("alice", "secret")
            ...connect to server.host:server.c2s_port as alice@localhost,
               verifying TLS against server.ca_file...

    ``directory`` holds everything (config, certificates, data, logs).  When
    it is omitted a temporary directory is made, and removed again by
    :meth:`cleanup` (which leaving the ``with`` block calls).  A directory
    passed in is never removed.

    Ports are chosen once, in the constructor, and kept across
    :meth:`restart`, as are accounts and other stored data.

    ``muc_log_storage`` selects where MUC history (MAM) is kept: ``"memory"``
    (lost on restart) or ``"sql"`` (SQLite in the data directory; needs the
    ``lua-dbi-sqlite3`` package).  ``extra_global``, ``extra_vhost`` and
    ``extra_muc`` are raw Lua configuration text appended to the global
    section, to the ``localhost`` virtual host and to the MUC component;
    ``anonymous_vhost`` replaces the anonymous host's body (with ``web=True``;
    default: SASL ANONYMOUS, no registration, no s2s), and
    ``extra_modules`` are loaded on every host (``("limits",)`` for mod_limits).

    ``web=True`` serves XMPP over WebSocket (RFC 7395, ``ws://host:port/xmpp-websocket``)
    and BOSH (``/http-bind``) on a free loopback HTTP port (:attr:`websocket_url`,
    :attr:`bosh_url`), and adds an anonymous virtual host (``anon.localhost``,
    SASL ANONYMOUS, no registration) for browser readers without an account.

    ``pubsub=True`` adds a PubSub service (XEP-0060, ``pubsub.localhost``)
    whose nodes and items are kept in SQLite (file storage rewrites a node's
    whole file on every publish); ``pubsub_admins`` are the bare JIDs that
    may create nodes there (Prosody lets only admins create them).
    """

    domain = "localhost"
    muc_domain = "conference.localhost"
    component_domain = "rc.localhost"
    pubsub_domain = "pubsub.localhost"
    anonymous_domain = "anon.localhost"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        muc_log_storage: MucLogStorage = "memory",
        extra_global: str = "",
        extra_vhost: str = "",
        extra_muc: str = "",
        anonymous_vhost: str | None = None,
        extra_modules: tuple[str, ...] = (),
        component_secret: str | None = None,
        pubsub: bool = False,
        pubsub_admins: tuple[str, ...] = (),
        web: bool = False,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        prosody = shutil.which("prosody")
        prosodyctl = shutil.which("prosodyctl")
        if prosody is None or prosodyctl is None:
            raise RuntimeError(_NOT_INSTALLED)
        if shutil.which("openssl") is None:
            raise RuntimeError(
                "openssl is not installed: run `make test` or apt-get install openssl"
            )
        if muc_log_storage not in ("memory", "sql"):
            raise ValueError(f"muc_log_storage must be 'memory' or 'sql', not {muc_log_storage!r}")
        self._prosody = prosody
        self._prosodyctl = prosodyctl
        self._host = host
        self._muc_log_storage: MucLogStorage = muc_log_storage
        self._extra_global = extra_global
        self._extra_vhost = extra_vhost
        self._extra_muc = extra_muc
        self._anonymous_vhost = anonymous_vhost
        self._extra_modules = tuple(extra_modules)
        self._pubsub = pubsub
        self._pubsub_admins = tuple(pubsub_admins)
        self._web = web
        self._component_secret = component_secret or secrets.token_hex(16)
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout

        if directory is None:
            self._dir = Path(tempfile.mkdtemp(prefix="prosody-")).resolve()
            self._owns_dir = True
        else:
            self._dir = Path(directory).resolve()
            self._dir.mkdir(parents=True, exist_ok=True)
            self._owns_dir = False

        self._c2s_port, self._component_port, self._http_port = _free_ports(host, 3)
        self._process: subprocess.Popen[bytes] | None = None
        self._out_files: list[IO[bytes]] = []
        self._frozen = False
        self._has_started = False
        self._returncode: int | None = None

        try:
            self._certs_dir.mkdir(exist_ok=True)
            self._data_dir.mkdir(exist_ok=True)
            self._write_certificate()
            self._write_config()
        except BaseException:
            if self._owns_dir:
                shutil.rmtree(self._dir, ignore_errors=True)
            raise

    # ----------------------------------------------------------------- paths

    @property
    def directory(self) -> Path:
        """The working directory holding config, certificates, data and logs."""
        return self._dir

    @property
    def config_file(self) -> Path:
        """The generated ``prosody.cfg.lua``."""
        return self._dir / "prosody.cfg.lua"

    @property
    def http_port(self) -> int:
        """The HTTP port of WebSocket and BOSH (with ``web=True``)."""
        return self._http_port

    @property
    def websocket_url(self) -> str:
        """``ws://host:port/xmpp-websocket`` (with ``web=True``)."""
        return f"ws://{self._host}:{self._http_port}/xmpp-websocket"

    @property
    def bosh_url(self) -> str:
        """``http://host:port/http-bind`` (with ``web=True``)."""
        return f"http://{self._host}:{self._http_port}/http-bind"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate; clients use it as their CA file."""
        return self._certs_dir / "localhost.crt"

    @property
    def log_file(self) -> Path:
        """Prosody's log (level info and above)."""
        return self._dir / "prosody.log"

    @property
    def sqlite_file(self) -> Path:
        """The SQLite database used when ``muc_log_storage="sql"``, and by PubSub."""
        return self._data_dir / "prosody.sqlite"

    @property
    def _certs_dir(self) -> Path:
        return self._dir / "certs"

    @property
    def _data_dir(self) -> Path:
        return self._dir / "data"

    # --------------------------------------------------------- connectivity

    @property
    def host(self) -> str:
        """The loopback address Prosody listens on."""
        return self._host

    @property
    def c2s_port(self) -> int:
        """The client-to-server port (plain TCP, STARTTLS offered)."""
        return self._c2s_port

    @property
    def component_port(self) -> int:
        """The XEP-0114 external component port."""
        return self._component_port

    @property
    def component_secret(self) -> str:
        """The shared secret of the ``rc.localhost`` component."""
        return self._component_secret

    @property
    def muc_log_storage(self) -> MucLogStorage:
        """Where MUC history is stored: ``"memory"`` or ``"sql"``."""
        return self._muc_log_storage

    def jid(self, user: str) -> str:
        """The bare JID of account ``user`` on :attr:`domain`."""
        return f"{user}@{self.domain}"

    def room_jid(self, room: str) -> str:
        """The bare JID of MUC room ``room`` on :attr:`muc_domain`."""
        return f"{room}@{self.muc_domain}"

    # ----------------------------------------------------------- lifecycle

    @property
    def pid(self) -> int | None:
        """The process id of the running server, or ``None``."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last server process that ended (``-9`` if killed).

        ``None`` before any process has ended.
        """
        return self._returncode

    @property
    def running(self) -> bool:
        """Whether the server process exists and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Prosody and wait until its c2s and component ports accept.

        Raises :class:`ProsodyError` (with the tail of the log) if it exits,
        cannot bind its ports, or is not listening within ``start_timeout``
        seconds.  If another process took one of the ports chosen in the
        constructor before the first start, fresh ports are picked (at most
        three times); after a first successful start the ports never change.
        """
        if self.running:
            raise ProsodyError("prosody is already running")
        for attempt in range(3):
            try:
                self._start_once()
            except _PortTakenError:
                if self._has_started or attempt == 2:
                    raise
                self._c2s_port, self._component_port = _free_ports(self._host, 2)
                self._write_config()
            else:
                self._has_started = True
                return

    def _start_once(self) -> None:
        self._reap()
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        stdout = (self._dir / "prosody.stdout").open("ab")
        stderr = (self._dir / "prosody.stderr").open("ab")
        self._out_files = [stdout, stderr]
        self._frozen = False
        process = subprocess.Popen(
            [self._prosody, "--config", str(self.config_file), "-F"],
            cwd=self._dir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._process = process
        deadline = time.monotonic() + self._start_timeout
        while True:
            log = self._log_since(offset)
            # A port Prosody cannot bind is logged before its service line.
            if "Failed to open server port" in log:
                self.kill()
                raise _PortTakenError("prosody could not bind a port" + self._tail())
            code = process.poll()
            if code is not None:
                self._reap()
                raise ProsodyError(
                    f"prosody exited with status {code} while starting" + self._tail()
                )
            # Ready means: both services are listening, and the main loop runs
            # (it answers a stream header; only then has mod_posix installed
            # its SIGTERM handler, so stop() is a clean shutdown).
            if (
                all(f"Activated service '{s}'" in log for s in ("c2s", "component"))
                and _port_open(self._host, self._component_port)
                and _stream_answers(self._host, self._c2s_port, self.domain)
            ):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ProsodyError(
                    f"prosody did not listen on {self._host}:{self._c2s_port} (c2s) and "
                    f":{self._component_port} (component) within {self._start_timeout:g} s"
                    + self._tail()
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout`` s.

        Does nothing if it is not running.  Works on a frozen server too.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if self._frozen:
                process.send_signal(signal.SIGCONT)
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self._stop_timeout)
        self._reap()

    def kill(self) -> None:
        """Kill the server abruptly with SIGKILL (for fault tests)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(timeout=self._stop_timeout)
        self._reap()

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports and data."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """Suspend the server with SIGSTOP: connections stay open, unanswered."""
        process = self._require_running()
        process.send_signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """Resume a server suspended by :meth:`freeze` (SIGCONT)."""
        process = self._require_running()
        process.send_signal(signal.SIGCONT)
        self._frozen = False

    # ------------------------------------------------------------ accounts

    def add_user(self, user: str, password: str) -> None:
        """Register ``user@localhost`` with ``password`` (running or not).

        An existing account gets its password replaced.
        """
        result = subprocess.run(
            [
                self._prosodyctl,
                "--config",
                str(self.config_file),
                "register",
                user,
                self.domain,
                password,
            ],
            cwd=self._dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise ProsodyError(f"prosodyctl register {user} failed ({result.returncode}): {output}")

    # ----------------------------------------------------------------- logs

    def log_text(self) -> str:
        """Prosody's log so far, plus anything it wrote to stdout or stderr."""
        parts = []
        for name in ("prosody.log", "prosody.stdout", "prosody.stderr"):
            path = self._dir / name
            if path.exists():
                text = path.read_text(errors="replace")
                if text:
                    parts.append(text if name == "prosody.log" else f"--- {name} ---\n{text}")
        return "\n".join(parts)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ internals

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            raise ProsodyError("prosody is not running")
        return self._process

    def _reap(self) -> None:
        """Forget an exited process and close its output files."""
        if self._process is not None and self._process.poll() is not None:
            self._returncode = self._process.returncode
            self._process = None
            self._frozen = False
        if self._process is None:
            for handle in self._out_files:
                handle.close()
            self._out_files = []

    def _write_certificate(self) -> None:
        key = self._certs_dir / "localhost.key"
        if self.ca_file.exists() and key.exists():
            return
        domains = (self.domain, self.muc_domain, self.component_domain, self.anonymous_domain)
        names = ",".join(f"DNS:{d}" for d in domains)
        command = [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
            *("-subj", f"/CN={self.domain}", "-addext", f"subjectAltName={names}"),
            *("-keyout", str(key), "-out", str(self.ca_file)),
        ]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise ProsodyError(f"openssl could not make a certificate: {output}")
        key.chmod(0o600)

    def _config_text(self) -> str:
        d = self._dir
        q = _lua_str
        stores = {"muc_log": self._muc_log_storage}
        if self._pubsub:
            stores.update(pubsub_nodes="sql", pubsub_data="sql")
        storage = "storage = { " + "; ".join(f"{k} = {q(v)}" for k, v in stores.items()) + " }"
        if "sql" in stores.values():
            storage += f'\nsql = {{ driver = "SQLite3"; database = {q(str(self.sqlite_file))} }}'
        modules = '"roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "register"; "smacks"'
        modules += "".join(f"; {q(name)}" for name in self._extra_modules)
        web_global = web_host = ""
        if self._web:
            modules += '; "websocket"; "bosh"'
            # WebSocket and BOSH on plain HTTP, loopback only: a browser reader's
            # entry. An anonymous host for readers without an account.
            web_global = f"""
http_ports = {{ {self._http_port} }}
http_default_host = {q(self.domain)}
http_interfaces = {{ {q(self._host)} }}
https_ports = {{ }}
consider_websocket_secure = true
consider_bosh_secure = true
cross_domain_websocket = true
cross_domain_bosh = true
"""
            anonymous = self._anonymous_vhost
            if anonymous is None:
                anonymous = """\
  authentication = "anonymous"
  allow_anonymous_s2s = false
  modules_disabled = { "register" }"""
            web_host = f"""
VirtualHost {q(self.anonymous_domain)}
{anonymous}
"""
        pubsub = ""
        if self._pubsub:
            admins = "; ".join(q(jid) for jid in self._pubsub_admins)
            pubsub = f"""
Component {q(self.pubsub_domain)} "pubsub"
  admins = {{ {admins} }}
"""
        return f"""\
-- Generated by harness.prosody for a throwaway test server.
run_as_root = true
data_path = {q(str(self._data_dir))}
pidfile = {q(str(d / "prosody.pid"))}
log = {{ info = {q(str(d / "prosody.log"))}; error = {q(str(d / "prosody.err"))} }}
interfaces = {{ {q(self._host)} }}
c2s_ports = {{ {self._c2s_port} }}
component_ports = {{ {self._component_port} }}
component_interfaces = {{ {q(self._host)} }}
s2s_ports = {{ }}
modules_enabled = {{ {modules} }}
-- mod_limits is deliberately absent: it throttles a client to ~10 kB/s.
-- mod_smacks gives XEP-0198 acknowledgements: the bridge resends what was not acked.
modules_disabled = {{ "s2s"; "offline" }}
authentication = "internal_hashed"
{storage}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
certificates = {q(str(self._certs_dir))}
{self._extra_global}

{web_global}
VirtualHost {q(self.domain)}
{'  modules_enabled = { "websocket"; "bosh" }' if self._web else ""}
{self._extra_vhost}
{web_host}
Component {q(self.muc_domain)} "muc"
  modules_enabled = {{ "muc_mam" }}
  muc_room_locking = false
  muc_room_default_persistent = true
  muc_log_by_default = true
  muc_log_all_rooms = true
  max_history_messages = 1000
{self._extra_muc}

Component {q(self.component_domain)}
  component_secret = {q(self._component_secret)}
{pubsub}"""

    def _write_config(self) -> None:
        self.config_file.write_text(self._config_text())

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<ProsodyServer {state} c2s={self._host}:{self._c2s_port} "
            f"component={self._component_port} dir={self._dir}>"
        )
