"""A throwaway ejabberd (Debian's 23.01 package) for the benchmarks.

:class:`EjabberdServer` mirrors the parts of
:class:`harness.prosody.ProsodyServer` the benchmarks use: one virtual
host (``localhost``) with STARTTLS on a free loopback c2s port, a MUC service
(``conference.localhost``) whose rooms are persistent and not archived
(``mod_mam`` is off unless ``mam=True``), XEP-0198 stream management, no shapers, and accounts
registered with ``ejabberdctl`` once the server runs.

ejabberd runs as the current user: a copy of ``/usr/sbin/ejabberdctl`` with
``INSTALLUSER`` emptied, ``HOME`` in the working directory (for the Erlang
cookie), Erlang distribution on a free loopback port without epmd.  The whole
Erlang VM is in its own process group, which :meth:`stop` kills.

It is used by ``benchmarks/ejabberd.py`` and by the ejabberd tests.
``mam=True`` turns the MUC archive on (``mod_mam`` in Mnesia, every room
archived: ``mam: true`` in the default room options).
``net_ticktime=N`` sets Erlang's ``net_ticktime`` (how soon a hung cluster node
is declared down by the others; 60 s by default).
``web=True`` adds an HTTP listener on a free loopback port with XMPP over
WebSocket (``/ws``) and BOSH (``/bosh``); ``anonymous_host=True`` adds the host
``anon.localhost`` (SASL ANONYMOUS) whose c2s sessions are shaped to 1,000 B/s,
``max_fsm_queue``, in-band registration denied to all and rooms whose newcomers
get no voice (``members_by_default: false``), as examples/ejabberd.yml has it
(other sessions stay unshaped; ``anonymous_shaped=False`` leaves the anonymous
host unshaped too, for a fan-out benchmark of many anonymous readers).

:class:`EjabberdCluster` runs two (or more) such nodes as one Mnesia cluster
on loopback: each node on its own address (127.0.0.2, 127.0.0.3, ...) with the
same Erlang distribution port, the same cookie, the same certificate and the
same hosts, joined with ``ejabberdctl join_cluster``. See its docstring.
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
from typing import IO, Any

from harness.prosody import _free_ports, _stream_answers

from .throwaway import ThrowawayServer

__all__ = ["EjabberdCluster", "EjabberdError", "EjabberdServer"]

_EJABBERDCTL = "/usr/sbin/ejabberdctl"


class EjabberdError(RuntimeError):
    """ejabberd could not be configured, started or driven as asked."""


def _bindable(host: str, port: int) -> bool:
    """Whether a listening socket could bind ``host:port`` now (with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _holders(host: str, ports: list[int]) -> str:
    """What ``ss`` says holds ``ports`` (for an error message), or why it cannot say."""
    try:
        result = subprocess.run(
            ["ss", "-tanp"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(ss failed: {exc})"
    anywhere = "0.0.0.0"  # noqa: S104 (matched in ss's output, not bound)
    wanted = tuple(f"{a}:{port} " for a in (host, anywhere, "*") for port in ports)
    return "\n".join(line for line in result.stdout.splitlines() if any(w in line for w in wanted))


class EjabberdServer(ThrowawayServer):
    """A private ejabberd instance on loopback, run as a child process group."""

    domain = "localhost"
    muc_domain = "conference.localhost"
    anonymous_domain = "anon.localhost"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        room_creators: tuple[str, ...] | None = None,
        web: bool = False,
        anonymous_host: bool = False,
        anonymous_shaped: bool = True,
        mam: bool = False,
        directory: str | os.PathLike[str] | None = None,
        node: str | None = None,
        dist_port: int | None = None,
        cookie: str | None = None,
        certificate: tuple[Path, Path] | None = None,
        net_ticktime: int | None = None,
    ) -> None:
        """``room_creators``: the bare JIDs allowed to create rooms (the shipped
        examples/ejabberd.yml: the bridge alone); None: every local account.

        For a cluster node (:class:`EjabberdCluster` passes these): ``directory``
        (made if missing, never removed by :meth:`cleanup`), ``node`` (the Erlang
        node name, ``name@address``), ``dist_port`` (the Erlang distribution
        port, listened on at ``host``), ``cookie`` (written to
        ``home/.erlang.cookie``) and ``certificate`` (``(pem, crt)``: key and
        certificate in one file, and the certificate alone, copied instead of
        making a new one).

        ``net_ticktime``: Erlang's ``net_ticktime`` in seconds (None: 60, Erlang's
        and ejabberd's default), set twice: ``net_ticktime: N`` in ejabberd.yml
        (ejabberd applies its own option at startup, over the VM's, and a change
        made then takes Erlang's 60 s transition) and ``-kernel net_ticktime N``
        in ejabberdctl.cfg (the VM has it from its start, so ejabberd's call
        changes nothing; ``ejabberdctl`` commands run with it too). A node that
        stops answering (hangs, or is cut off) is declared down by the others
        after N to 1.25 N s; until then the rooms whose processes run on it hang
        for everyone. Every node of a cluster must have the same value."""
        if net_ticktime is not None and net_ticktime < 1:
            raise ValueError(f"net_ticktime must be at least 1 s, not {net_ticktime}")
        self._net_ticktime = net_ticktime
        self._room_creators = room_creators
        self._web = web
        self._anonymous_host = anonymous_host
        self._anonymous_shaped = anonymous_shaped
        self._mam = mam
        if not Path(_EJABBERDCTL).exists() or shutil.which("erl") is None:
            raise RuntimeError("ejabberd is not installed: apt-get install ejabberd")
        if shutil.which("openssl") is None:
            raise RuntimeError("openssl is not installed: apt-get install openssl")
        self._host = host
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        if directory is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ejabberd-")).resolve()
            self._owns_dir = True
        else:
            self._dir = Path(directory).resolve()
            self._dir.mkdir(parents=True, exist_ok=True)
            self._owns_dir = False
        self._c2s_port, free_dist_port, self._http_port = _free_ports(host, 3)
        self._dist_port = free_dist_port if dist_port is None else dist_port
        self._node = node or f"xmlrc{secrets.token_hex(4)}@localhost"
        self._process: subprocess.Popen[bytes] | None = None
        self._out_files: list[IO[bytes]] = []
        try:
            for sub in ("logs", "spool", "home"):
                (self._dir / sub).mkdir(exist_ok=True)
            self._write_ctl()
            if cookie is not None:
                self._write_cookie(cookie)
            if certificate is None:
                self._write_certificate()
            else:
                self._copy_certificate(*certificate)
            self._write_config()
        except BaseException:
            if self._owns_dir:
                shutil.rmtree(self._dir, ignore_errors=True)
            raise

    # --------------------------------------------------------- connectivity

    @property
    def directory(self) -> Path:
        """The working directory holding config, certificate, spool and logs."""
        return self._dir

    @property
    def host(self) -> str:
        """The loopback address ejabberd listens on."""
        return self._host

    @property
    def c2s_port(self) -> int:
        """The client-to-server port (plain TCP, STARTTLS offered)."""
        return self._c2s_port

    @property
    def http_port(self) -> int:
        """The HTTP port of WebSocket and BOSH (with ``web=True``)."""
        return self._http_port

    @property
    def websocket_url(self) -> str:
        """``ws://host:port/ws`` (with ``web=True``)."""
        return f"ws://{self._host}:{self._http_port}/ws"

    @property
    def bosh_url(self) -> str:
        """``http://host:port/bosh`` (with ``web=True``)."""
        return f"http://{self._host}:{self._http_port}/bosh"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate; clients use it as their CA file."""
        return self._dir / "localhost.crt"

    @property
    def certificate_file(self) -> Path:
        """The server's key and certificate in one PEM file (``certfiles``)."""
        return self._dir / "localhost.pem"

    @property
    def node(self) -> str:
        """The Erlang node name (``name@host``)."""
        return self._node

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port (no epmd: every node listens on it)."""
        return self._dist_port

    @property
    def net_ticktime(self) -> int:
        """Erlang's ``net_ticktime`` of this node, in seconds (60 unless set)."""
        return 60 if self._net_ticktime is None else self._net_ticktime

    @property
    def log_file(self) -> Path:
        """ejabberd's main log."""
        return self._dir / "logs" / "ejabberd.log"

    @property
    def pid(self) -> int | None:
        """The process id of the Erlang VM (the process group leader), or ``None``."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process exists and has not exited."""
        return self._process is not None and self._process.poll() is None

    def jid(self, user: str) -> str:
        """The bare JID of account ``user`` on :attr:`domain`."""
        return f"{user}@{self.domain}"

    def room_jid(self, room: str) -> str:
        """The bare JID of MUC room ``room`` on :attr:`muc_domain`."""
        return f"{room}@{self.muc_domain}"

    # ----------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start ejabberd and wait until its c2s port answers a stream header.

        A restart (after :meth:`kill` or :meth:`stop`) keeps the ports, which
        clients know: it first waits (up to half of ``start_timeout``) until
        they can be bound again, and tries again (three times at most) when
        ejabberd still finds one taken (``eaddrinuse``: another program on the
        machine was handed the port while this node was down)."""
        if self.running:
            raise EjabberdError("ejabberd is already running")
        for attempt in range(3):
            self._wait_ports_free(self._start_timeout / 2)
            log_size = self._stdout_file.stat().st_size if self._stdout_file.exists() else 0
            stdout = self._stdout_file.open("ab")
            self._out_files = [stdout]
            self._process = subprocess.Popen(
                [*self._ctl_command(), "foreground"],
                cwd=self._dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self.wait_ready()
                return
            except EjabberdError:
                with self._stdout_file.open("rb") as handle:
                    handle.seek(log_size)
                    taken = b"eaddrinuse" in handle.read()
                if not taken or attempt == 2:
                    raise
                time.sleep(1.0)

    @property
    def _stdout_file(self) -> Path:
        return self._dir / "ejabberd.stdout"

    def _ports(self) -> list[int]:
        return [self._c2s_port, self._dist_port, *([self._http_port] if self._web else [])]

    def _wait_ports_free(self, timeout: float) -> None:
        """Wait until this node's TCP ports can be bound on its address (as ejabberd
        binds them: SO_REUSEADDR, so connections left in TIME_WAIT do not count)."""
        deadline = time.monotonic() + timeout
        while True:
            busy = [port for port in self._ports() if not _bindable(self._host, port)]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise EjabberdError(
                    f"ports {busy} on {self._host} are still taken after {timeout:g} s:\n"
                    + _holders(self._host, busy)
                )
            time.sleep(0.2)

    def wait_ready(self) -> None:
        """Wait until the c2s port answers a stream header (:class:`EjabberdError`,
        and the server stopped, if it exits or does not within ``start_timeout``)."""
        if self._process is None:
            raise EjabberdError("ejabberd is not running")
        deadline = time.monotonic() + self._start_timeout
        while not _stream_answers(self._host, self._c2s_port, self.domain):
            code = self._process.poll()
            if code is not None:
                self.stop()
                raise EjabberdError(f"ejabberd exited with status {code}" + self._tail())
            if time.monotonic() > deadline:
                self.stop()
                raise EjabberdError(
                    f"ejabberd did not answer on {self._host}:{self._c2s_port} "
                    f"within {self._start_timeout:g} s" + self._tail()
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the Erlang VM: SIGTERM to its process group, then SIGKILL."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                self._signal_group(process.pid, signal.SIGTERM)
                self._signal_group(process.pid, signal.SIGCONT)  # if frozen
                try:
                    process.wait(timeout=self._stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=self._stop_timeout)
            # Anything left in the group (heart, inet_gethost, erl_child_setup).
            self._signal_group(process.pid, signal.SIGKILL)
            self._process = None
        for handle in self._out_files:
            handle.close()
        self._out_files = []

    def kill(self) -> None:
        """SIGKILL the Erlang VM's whole process group at once (a node lost, no
        goodbye to anyone); :meth:`start` brings it back on the same spool."""
        process = self._process
        if process is None:
            return
        self._signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self._stop_timeout)
        self.stop()

    def freeze(self) -> None:
        """SIGSTOP the node's process group: a hung node (its sockets stay open,
        nothing answers; the other nodes declare it down after Erlang's
        ``net_ticktime``, :attr:`net_ticktime` s). :meth:`thaw` resumes it; :meth:`stop` and
        :meth:`kill` work on a frozen node too."""
        if self._process is None or self._process.poll() is not None:
            raise EjabberdError("ejabberd is not running")
        self._signal_group(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a node :meth:`freeze` stopped. A cluster node that was declared
        down meanwhile comes back partitioned (Mnesia: inconsistent_database):
        restart it (:meth:`stop`, :meth:`start`) to make it load from the others."""
        if self._process is None or self._process.poll() is not None:
            raise EjabberdError("ejabberd is not running")
        self._signal_group(self._process.pid, signal.SIGCONT)

    # ------------------------------------------------------------ accounts

    def add_user(self, user: str, password: str) -> None:
        """Register ``user@localhost`` (the server must be running)."""
        if not self.running:
            raise EjabberdError("ejabberd must be running to register accounts")
        self.ctl("register", user, self.domain, password)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``ejabberdctl ARGS`` against this node and return its output;
        :class:`EjabberdError` when it fails or exits non-zero."""
        try:
            result = subprocess.run(
                [*self._ctl_command(), *args],
                cwd=self._dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EjabberdError(f"ejabberdctl {args[0]} took over {timeout:g} s") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise EjabberdError(f"ejabberdctl {args[0]} failed ({result.returncode}): {output}")
        # Its stderr has only warnings ("not recommended to run ejabberd as root").
        return result.stdout.decode(errors="replace").strip()

    def cluster_members(self) -> list[str]:
        """The node names ``list_cluster`` prints (this node included)."""
        return [
            line.strip().strip("'") for line in self.ctl("list_cluster").splitlines() if "@" in line
        ]

    def connected_users(self) -> list[str]:
        """The full JIDs of the c2s sessions (``connected_users``; in a cluster,
        every node's: the session table is replicated)."""
        return self.ctl("connected_users").split()

    def sessions(self) -> dict[str, str]:
        """Each c2s session's full JID -> the Erlang node that holds it
        (``connected_users_info``, mod_admin_extra; in a cluster, every node's)."""
        found = {}
        for line in self.ctl("connected_users_info").splitlines():
            fields = line.split("\t")
            if len(fields) >= 6 and "@" in fields[0]:
                found[fields[0]] = fields[5]
        return found

    # ----------------------------------------------------------------- logs

    def log_text(self) -> str:
        """ejabberd's log and console output so far."""
        parts = []
        logs = self._dir / "logs"
        for path in (self.log_file, logs / "error.log", self._stdout_file):
            if path.exists():
                text = path.read_text(errors="replace")
                if text:
                    parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)

    # ------------------------------------------------------------ internals

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self._dir / "home")}

    def _ctl_command(self) -> list[str]:
        d = self._dir
        return [
            *("sh", str(d / "ejabberdctl")),
            *("--config-dir", str(d), "--config", str(d / "ejabberd.yml")),
            *("--ctl-config", str(d / "ejabberdctl.cfg")),
            *("--logs", str(d / "logs"), "--spool", str(d / "spool")),
        ]

    def _write_cookie(self, cookie: str) -> None:
        path = self._dir / "home" / ".erlang.cookie"
        if path.exists():
            path.chmod(0o600)
        path.write_text(cookie)
        path.chmod(0o400)

    def _copy_certificate(self, pem: Path, crt: Path) -> None:
        shutil.copyfile(crt, self.ca_file)
        shutil.copyfile(pem, self.certificate_file)
        self.certificate_file.chmod(0o600)

    def _write_ctl(self) -> None:
        script = Path(_EJABBERDCTL).read_text()
        script = script.replace("\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n", 1)
        if "\nINSTALLUSER=\n" not in script:
            raise EjabberdError(f"{_EJABBERDCTL} has no INSTALLUSER=ejabberd line to empty")
        # `foreground` execs the VM, so the process we started is the VM itself (we
        # wait for it, reap it, and a SIGKILL of it leaves no shell behind).
        for before, after in (
            ('as_current_user) "$@" ;;', 'as_current_user) $XMLRC_EXEC "$@" ;;'),
            (
                "foreground)\n        check_start\n",
                "foreground)\n        check_start\n        XMLRC_EXEC=exec\n",
            ),
        ):
            if before not in script:
                raise EjabberdError(f"{_EJABBERDCTL} has no {before!r} to change")
            script = script.replace(before, after, 1)
        (self._dir / "ejabberdctl").write_text(script)
        erl_options = "-env ERL_CRASH_DUMP_BYTES 0"
        if self._net_ticktime is not None:
            # The node and every ejabberdctl call (a hidden node talking to it) alike.
            erl_options += f" -kernel net_ticktime {self._net_ticktime}"
        (self._dir / "ejabberdctl.cfg").write_text(
            f'POLL=true\nERL_PROCESSES=250000\nERL_OPTIONS="{erl_options}"\n'
            f"ERLANG_NODE={self._node}\nERL_DIST_PORT={self._dist_port}\n"
            f"INET_DIST_INTERFACE={self._host}\n"
            f"EJABBERD_PID_PATH={self._dir / 'ejabberd.pid'}\n"
        )
        (self._dir / "inetrc").write_text(
            '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n'
        )

    def _write_certificate(self) -> None:
        key = self._dir / "localhost.key"
        domains = (self.domain, self.muc_domain, self.anonymous_domain)
        names = ",".join(f"DNS:{d}" for d in domains)
        command = [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
            *("-subj", f"/CN={self.domain}", "-addext", f"subjectAltName={names}"),
            *("-keyout", str(key), "-out", str(self.ca_file)),
        ]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise EjabberdError(f"openssl could not make a certificate: {output}")
        pem = self.certificate_file
        pem.write_text(key.read_text() + self.ca_file.read_text())
        pem.chmod(0o600)
        key.chmod(0o600)

    def _write_config(self) -> None:
        # No shaper anywhere (the stock c2s shaper allows 3,000 B/s); MAM if asked;
        # every local account may create rooms (acl "local" must be defined),
        # or only `room_creators`, as examples/ejabberd.yml has it.
        creators = "local"
        creators_acl = ""
        if self._room_creators is not None:
            creators = "xmlrc_bridge"
            users = "".join(f'\n      - "{jid}"' for jid in self._room_creators)
            creators_acl = f"\n  xmlrc_bridge:\n    user:{users}"
        hosts = f"  - {self.domain}\n"
        host_config = shaper_acl = web_listener = bosh = register = register_module = ""
        room_defaults = ""
        listener_shaper = ""
        if self._anonymous_host:
            # As examples/ejabberd.yml: anonymous sessions shaped, everyone else not.
            hosts += f"  - {self.anonymous_domain}\n"
            host_config = f"""host_config:
  {self.anonymous_domain}:
    auth_method: anonymous
    anonymous_protocol: sasl_anon
"""
            if self._anonymous_shaped:
                host_config += """max_fsm_queue: 1000
shaper:
  anonymous_reader: 1000
shaper_rules:
  c2s_shaper:
    anonymous_reader: anonymous_readers
    none: all
"""
                shaper_acl = f"\n  anonymous_readers:\n    server: {self.anonymous_domain}"
                listener_shaper = "\n    shaper: c2s_shaper"
            register = "\n  register:\n    deny: all"
            # A moderated room still gives newcomers voice unless this is off.
            room_defaults = "\n      members_by_default: false"
            register_module = "\n  mod_register:\n    access: register"
        mam = "false"
        mam_module = ""
        if self._mam:
            # The room archive in Mnesia (archive_msg, disc_only_copies), every room.
            mam = "true"
            mam_module = "\n  mod_mam:\n    db_type: mnesia\n    default: never"
        if self._web:
            web_listener = f"""
  -
    port: {self._http_port}
    ip: "{self._host}"
    module: ejabberd_http
    request_handlers:
      /ws: ejabberd_http_ws
      /bosh: mod_bosh"""
            bosh = "\n  mod_bosh: {}"
        # ejabberd sets net_kernel's tick time itself at startup (its own option,
        # default 60 s), overriding -kernel net_ticktime: set both (the -kernel one
        # has it from the VM's start, so ejabberd's call changes nothing).
        ticktime = "" if self._net_ticktime is None else f"net_ticktime: {self._net_ticktime}\n"
        (self._dir / "ejabberd.yml").write_text(
            f"""\
hosts:
{hosts}{host_config}loglevel: info
{ticktime}certfiles:
  - "{self._dir / "localhost.pem"}"
listen:
  -
    port: {self._c2s_port}
    ip: "{self._host}"
    module: ejabberd_c2s
    starttls: true
    max_stanza_size: 262144{listener_shaper}{web_listener}
s2s_use_starttls: false
auth_method: internal
acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8{creators_acl}{shaper_acl}
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  muc_create:
    allow: {creators}{register}
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_admin_extra: {{}}
  mod_muc_admin: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_stream_mgmt: {{}}{bosh}{register_module}{mam_module}
  mod_muc:
    host: "{self.muc_domain}"
    access: all
    access_create: muc_create
    access_persistent: muc_create
    access_admin: none
    history_size: 20
    max_users: 1000
    default_room_options:
      persistent: true
      mam: {mam}{room_defaults}
"""
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EjabberdServer {state} c2s={self._host}:{self._c2s_port} dir={self._dir}>"


def _port_free_on(addresses: list[str], port: int) -> bool:
    """Whether TCP ``port`` can be bound on every one of ``addresses`` right now."""
    with contextlib.ExitStack() as stack:
        for address in addresses:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def _common_free_port(addresses: list[str], attempts: int = 50) -> int:
    """A TCP port free on all ``addresses`` (the Erlang distribution port)."""
    for _ in range(attempts):
        (port,) = _free_ports(addresses[0], 1)
        if _port_free_on(addresses, port):
            return port
    raise EjabberdError(f"no TCP port free on all of {addresses} in {attempts} attempts")


class EjabberdCluster(ThrowawayServer):
    """Two (or more) throwaway ejabberd nodes on loopback, one Mnesia cluster.

    Node ``i`` (0-based) is ``xmlrc<i+1>_<random>@127.0.0.<i+2>``: it listens on
    its own loopback address for Erlang distribution (every node on the same
    port, :attr:`dist_port`, free on all the addresses; there is no epmd) and
    for c2s (a free port of that address). All nodes share the Erlang cookie,
    the certificate (valid for ``localhost``, ``conference.localhost`` and
    ``anon.localhost``; clients connect by IP and name the domain), the hosts
    and every other option; ``options`` go to each :class:`EjabberdServer`
    (``room_creators``, ``mam``, ``anonymous_host``, ``anonymous_shaped``,
    ``web``, ``net_ticktime``...).

    :meth:`start` starts the first node, then each other node, which joins
    the first (``join_cluster``), and waits until every node lists them all.
    Accounts live in Mnesia, replicated: :meth:`add_user` once, through any
    running node. :meth:`cleanup` (leaving the ``with`` block) stops every
    node and removes the cluster's directory.

    Fault tests: ``cluster.nodes[i].kill()`` SIGKILLs a node's whole process
    group; ``cluster.nodes[i].start()`` brings it back, and it rejoins the
    cluster from its spool (:meth:`wait_members` waits for that);
    ``freeze()``/``thaw()`` hang and resume it (SIGSTOP/SIGCONT): the others
    declare it down after Erlang's ``net_ticktime`` (60 s; ``net_ticktime=N``
    sets it on every node), and once thawed it stays partitioned from them
    (Mnesia's ``inconsistent_database``) until restarted.

    The room-creation trap: a room that does not exist yet, joined at the same
    moment through two nodes, becomes two rooms (one per node, each delivering
    only to its own node's occupants). Create a room through one node first
    (:meth:`EjabberdServer`'s bridge, or a test's first occupant), then let
    others join through any node.
    """

    domain = EjabberdServer.domain
    muc_domain = EjabberdServer.muc_domain
    anonymous_domain = EjabberdServer.anonymous_domain

    def __init__(
        self,
        nodes: int = 2,
        *,
        join_timeout: float = 60.0,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        **options: Any,
    ) -> None:
        if not 1 <= nodes <= 200:
            raise ValueError(f"nodes must be 1 to 200, not {nodes}")
        self._join_timeout = join_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="ejabberd-cluster-")).resolve()
        self._owns_dir = True
        self.nodes: list[EjabberdServer] = []
        try:
            addresses = [f"127.0.0.{2 + i}" for i in range(nodes)]
            self._dist_port = _common_free_port(addresses)
            cookie = secrets.token_hex(16)
            suffix = secrets.token_hex(4)
            certificate: tuple[Path, Path] | None = None
            for i, address in enumerate(addresses):
                node = EjabberdServer(
                    host=address,
                    start_timeout=start_timeout,
                    stop_timeout=stop_timeout,
                    directory=self._dir / f"node{i + 1}",
                    node=f"xmlrc{i + 1}_{suffix}@{address}",
                    dist_port=self._dist_port,
                    cookie=cookie,
                    certificate=certificate,
                    **options,
                )
                certificate = (node.certificate_file, node.ca_file)
                self.nodes.append(node)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    # --------------------------------------------------------- connectivity

    @property
    def directory(self) -> Path:
        """The cluster's directory: one ``node<N>`` folder per node."""
        return self._dir

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port every node listens on (at its own address)."""
        return self._dist_port

    @property
    def ca_file(self) -> Path:
        """The certificate all nodes share; clients use it as their CA file."""
        return self.nodes[0].ca_file

    @property
    def running(self) -> bool:
        """Whether any node is running."""
        return any(node.running for node in self.nodes)

    @property
    def servers(self) -> list[tuple[str, int]]:
        """Every node's c2s address, ``(host, port)``, in node order."""
        return [(node.host, node.c2s_port) for node in self.nodes]

    def jid(self, user: str) -> str:
        """The bare JID of account ``user`` on :attr:`domain`."""
        return f"{user}@{self.domain}"

    def room_jid(self, room: str) -> str:
        """The bare JID of MUC room ``room`` on :attr:`muc_domain`."""
        return f"{room}@{self.muc_domain}"

    def running_node(self) -> EjabberdServer:
        """The first node that runs (:class:`EjabberdError` if none does)."""
        for node in self.nodes:
            if node.running:
                return node
        raise EjabberdError("no node of the cluster is running")

    def node_of(self, jid: str) -> EjabberdServer | None:
        """The node holding a c2s session of ``jid`` (a bare JID matches any of its
        resources, the first found; a full JID only itself), or ``None``."""
        by_name = {node.node: node for node in self.nodes}
        for full, name in self.running_node().sessions().items():
            if full == jid or full.split("/", 1)[0] == jid:
                return by_name.get(name)
        return None

    # ----------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the first node, then the others, each joining the first; return
        when every node lists all of them (:meth:`cluster_members`)."""
        if self.running:
            raise EjabberdError("the cluster is already running")
        try:
            first = self.nodes[0]
            first.start()
            for node in self.nodes[1:]:
                node.start()
                node.ctl("--no-timeout", "join_cluster", first.node, timeout=self._join_timeout)
                # join_cluster restarts ejabberd on the joining node: wait for its c2s again.
                node.wait_ready()
            self.wait_members()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (the last one first)."""
        for node in reversed(self.nodes):
            node.stop()

    def wait_members(self, timeout: float | None = None) -> list[str]:
        """Wait until every running node lists every running node as a member;
        return the member list."""
        limit = self._join_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        expected = {node.node for node in self.nodes if node.running}
        seen: dict[str, list[str]] = {}
        while True:
            seen = {}
            for node in self.nodes:
                if node.running:
                    try:
                        seen[node.node] = node.cluster_members()
                    except EjabberdError as error:
                        seen[node.node] = [str(error)]
            if all(expected <= set(members) for members in seen.values()):
                return sorted(expected)
            if time.monotonic() > deadline:
                raise EjabberdError(
                    f"the cluster did not form within {limit:g} s: "
                    f"expected {sorted(expected)}, nodes list {seen}" + self._tail()
                )
            time.sleep(0.2)

    def cluster_members(self) -> list[str]:
        """The node names ``list_cluster`` prints, through a running node."""
        return self.running_node().cluster_members()

    # ------------------------------------------------------------ accounts

    def add_user(self, user: str, password: str) -> None:
        """Register ``user@localhost`` through a running node (Mnesia replicates it)."""
        self.running_node().add_user(user, password)

    # ----------------------------------------------------------------- logs

    def log_text(self) -> str:
        """Every node's log, one after the other."""
        return "\n".join(
            f"=== {node.node} ({node.directory.name}) ===\n{node.log_text()}" for node in self.nodes
        )

    def __repr__(self) -> str:
        states = ", ".join(
            f"{n.node} {'running' if n.running else 'stopped'} c2s={n.host}:{n.c2s_port}"
            for n in self.nodes
        )
        return f"<EjabberdCluster [{states}] dir={self._dir}>"
