"""A throwaway ejabberd (Debian's 23.01 package) for the benchmarks.

:class:`EjabberdServer` mirrors the parts of
:class:`harness.prosody.ProsodyServer` the benchmarks use: one virtual
host (``localhost``) with STARTTLS on a free loopback c2s port, a MUC service
(``conference.localhost``) whose rooms are persistent and not archived
(``mod_mam`` is off), XEP-0198 stream management, no shapers, and accounts
registered with ``ejabberdctl`` once the server runs.

ejabberd runs as the current user: a copy of ``/usr/sbin/ejabberdctl`` with
``INSTALLUSER`` emptied, ``HOME`` in the working directory (for the Erlang
cookie), Erlang distribution on a free loopback port without epmd.  The whole
Erlang VM is in its own process group, which :meth:`stop` kills.

It is used by ``benchmarks/ejabberd.py`` and by the ejabberd tests.
``web=True`` adds an HTTP listener on a free loopback port with XMPP over
WebSocket (``/ws``) and BOSH (``/bosh``); ``anonymous_host=True`` adds the host
``anon.localhost`` (SASL ANONYMOUS) whose c2s sessions are shaped to 1,000 B/s,
``max_fsm_queue``, in-band registration denied to all and rooms whose newcomers
get no voice (``members_by_default: false``), as examples/ejabberd.yml has it
(other sessions stay unshaped).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from harness.prosody import _free_ports, _stream_answers

from .throwaway import ThrowawayServer

__all__ = ["EjabberdError", "EjabberdServer"]

_EJABBERDCTL = "/usr/sbin/ejabberdctl"


class EjabberdError(RuntimeError):
    """ejabberd could not be configured, started or driven as asked."""


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
    ) -> None:
        """``room_creators``: the bare JIDs allowed to create rooms (the shipped
        examples/ejabberd.yml: the bridge alone); None: every local account."""
        self._room_creators = room_creators
        self._web = web
        self._anonymous_host = anonymous_host
        if not Path(_EJABBERDCTL).exists() or shutil.which("erl") is None:
            raise RuntimeError("ejabberd is not installed: apt-get install ejabberd")
        if shutil.which("openssl") is None:
            raise RuntimeError("openssl is not installed: apt-get install openssl")
        self._host = host
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="ejabberd-")).resolve()
        self._c2s_port, self._dist_port, self._http_port = _free_ports(host, 3)
        self._node = f"xmlrc{secrets.token_hex(4)}@localhost"
        self._process: subprocess.Popen[bytes] | None = None
        self._out_files: list[IO[bytes]] = []
        try:
            for sub in ("logs", "spool", "home"):
                (self._dir / sub).mkdir()
            self._write_ctl()
            self._write_certificate()
            self._write_config()
        except BaseException:
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
        """Start ejabberd and wait until its c2s port answers a stream header."""
        if self.running:
            raise EjabberdError("ejabberd is already running")
        stdout = (self._dir / "ejabberd.stdout").open("ab")
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

    # ------------------------------------------------------------ accounts

    def add_user(self, user: str, password: str) -> None:
        """Register ``user@localhost`` (the server must be running)."""
        if not self.running:
            raise EjabberdError("ejabberd must be running to register accounts")
        result = subprocess.run(
            [*self._ctl_command(), "register", user, self.domain, password],
            cwd=self._dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise EjabberdError(
                f"ejabberdctl register {user} failed ({result.returncode}): {output}"
            )

    # ----------------------------------------------------------------- logs

    def log_text(self) -> str:
        """ejabberd's log and console output so far."""
        parts = []
        logs = self._dir / "logs"
        for path in (self.log_file, logs / "error.log", self._dir / "ejabberd.stdout"):
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

    def _write_ctl(self) -> None:
        script = Path(_EJABBERDCTL).read_text()
        script = script.replace("\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n", 1)
        if "\nINSTALLUSER=\n" not in script:
            raise EjabberdError(f"{_EJABBERDCTL} has no INSTALLUSER=ejabberd line to empty")
        (self._dir / "ejabberdctl").write_text(script)
        (self._dir / "ejabberdctl.cfg").write_text(
            f'POLL=true\nERL_PROCESSES=250000\nERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n'
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
        pem = self._dir / "localhost.pem"
        pem.write_text(key.read_text() + self.ca_file.read_text())
        pem.chmod(0o600)
        key.chmod(0o600)

    def _write_config(self) -> None:
        # No shaper anywhere (the stock c2s shaper allows 3,000 B/s); no MAM;
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
max_fsm_queue: 1000
shaper:
  anonymous_reader: 1000
shaper_rules:
  c2s_shaper:
    anonymous_reader: anonymous_readers
    none: all
"""
            shaper_acl = f"\n  anonymous_readers:\n    server: {self.anonymous_domain}"
            register = "\n  register:\n    deny: all"
            # A moderated room still gives newcomers voice unless this is off.
            room_defaults = "\n      members_by_default: false"
            register_module = "\n  mod_register:\n    access: register"
            listener_shaper = "\n    shaper: c2s_shaper"
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
        (self._dir / "ejabberd.yml").write_text(
            f"""\
hosts:
{hosts}{host_config}loglevel: info
certfiles:
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
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_stream_mgmt: {{}}{bosh}{register_module}
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
      mam: false{room_defaults}
"""
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EjabberdServer {state} c2s={self._host}:{self._c2s_port} dir={self._dir}>"
