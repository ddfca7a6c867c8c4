"""A throwaway Redis server for the tests: Debian's ``redis-server`` on loopback.

This module is responsible for one thing: bringing up a private, disposable
Redis and tearing it down again.  :class:`RedisServer`

* picks a free loopback TCP port (kept across :meth:`restart`),
* writes a configuration into a working directory: no persistence (no RDB,
  no AOF), a password for the default user (``requirepass``) and an ACL user
  (``bridge``) that may only use pub/sub and connection commands,
* runs ``redis-server`` in the foreground as a child process and waits until
  it answers ``AUTH`` + ``PING``, and stops or kills it again.

It uses only the standard library and no threads, like the other throwaway
servers.  Failing to start raises :class:`RedisError` with the end of the log:
tests fail, they do not skip.  Not meant for production.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from .throwaway import ThrowawayServer

__all__ = ["RedisError", "RedisServer"]

_NOT_INSTALLED = (
    "redis-server is not installed: run `make install` (or apt-get install redis-server)"
)


class RedisError(RuntimeError):
    """Redis could not be configured, started or driven as asked."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _resp(*words: str) -> bytes:
    """A command in the Redis protocol (RESP)."""
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer(ThrowawayServer):
    """A private ``redis-server`` on loopback, run as a child process.

    Typical use::

        with RedisServer() as server:    # starts; stops on exit
            ...connect to server.url (AUTH server.password), or as
               server.acl_user / server.acl_password...

    ``directory`` holds the config and the log; when omitted a temporary
    directory is made and removed by :meth:`cleanup`.
    """

    #: The ACL user that may only subscribe, publish and ping.
    acl_user = "bridge"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        tls: bool = False,
    ) -> None:
        """``tls``: listen with TLS only (``rediss://``), with a fresh self-signed
        certificate for ``localhost`` and the host address (:attr:`ca_file`)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisError(_NOT_INSTALLED)
        self._binary = binary
        self._host = host
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        if directory is None:
            self._dir = Path(tempfile.mkdtemp(prefix="redis-")).resolve()
            self._owns_dir = True
        else:
            self._dir = Path(directory).resolve()
            self._dir.mkdir(parents=True, exist_ok=True)
            self._owns_dir = False
        self._port = _free_port(host)
        self._password = secrets.token_hex(16)
        self._acl_password = secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._tls = tls
        if tls:
            self._write_certificate()
        self._write_config()

    # ------------------------------------------------------------ connectivity

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def config_file(self) -> Path:
        return self._dir / "redis.conf"

    @property
    def log_file(self) -> Path:
        return self._dir / "redis.log"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def password(self) -> str:
        """The default user's password (``requirepass``)."""
        return self._password

    @property
    def acl_password(self) -> str:
        """The password of :attr:`acl_user`."""
        return self._acl_password

    @property
    def url(self) -> str:
        """``redis://host:port/0`` (``rediss://`` with TLS), without credentials."""
        scheme = "rediss" if self._tls else "redis"
        return f"{scheme}://{self._host}:{self._port}/0"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate a TLS client trusts (with ``tls=True``)."""
        return self._dir / "redis.crt"

    def _write_certificate(self) -> None:
        key = self._dir / "redis.key"
        command = [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", f"subjectAltName=DNS:localhost,IP:{self._host}"),
            *("-keyout", str(key), "-out", str(self.ca_file)),
        ]
        result = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RedisError("openssl could not make a certificate: " + result.stderr.decode())
        key.chmod(0o600)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --------------------------------------------------------------- lifecycle

    def _write_config(self) -> None:
        if self._tls:
            listen = [
                "port 0",
                f"tls-port {self._port}",
                f'tls-cert-file "{self.ca_file}"',
                f'tls-key-file "{self._dir / "redis.key"}"',
                f'tls-ca-cert-file "{self.ca_file}"',
                "tls-auth-clients no",
            ]
        else:
            listen = [f"port {self._port}"]
        lines = [
            f"bind {self._host}",
            *listen,
            "protected-mode yes",
            "daemonize no",
            'save ""',
            "appendonly no",
            f'dir "{self._dir}"',
            f'logfile "{self.log_file}"',
            "loglevel notice",
            f"requirepass {self._password}",
            # Only what a subscriber (or MediaWiki's publisher) needs: pub/sub, AUTH, PING.
            f"user {self.acl_user} on >{self._acl_password} resetchannels &* "
            "-@all +@pubsub +@connection",
        ]
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.config_file.chmod(0o600)

    def start(self) -> None:
        """Start ``redis-server`` and wait until it answers ``AUTH`` and ``PING``."""
        if self.running:
            raise RedisError("redis-server is already running")
        self._reap()
        self._out = (self._dir / "redis.stdout").open("ab")
        self._process = subprocess.Popen(
            [self._binary, str(self.config_file)],
            cwd=self._dir,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._start_timeout
        while not self._answers():
            code = self._process.poll()
            if code is not None:
                self._reap()
                raise RedisError(f"redis-server exited with status {code}" + self._tail())
            if time.monotonic() > deadline:
                self.stop()
                raise RedisError(
                    f"redis-server did not answer on {self._host}:{self._port} within "
                    f"{self._start_timeout:g} s" + self._tail()
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(
                    socket.create_connection((self._host, self._port), timeout=1.0)
                )
                if self._tls:
                    context = ssl.create_default_context(cafile=str(self.ca_file))
                    sock = stack.enter_context(
                        context.wrap_socket(sock, server_hostname="localhost")
                    )
                sock.sendall(_resp("AUTH", self._password) + _resp("PING"))
                got = b""
                for _ in range(100):  # bounded: two short answers
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                    if got.count(b"\r\n") >= 2:
                        break
        except OSError:
            return False
        if got.startswith(b"-"):
            raise RedisError(f"redis-server refused AUTH: {got[:200]!r}" + self._tail())
        return got == b"+OK\r\n+PONG\r\n"

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout`` s."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=self._stop_timeout)
        self._reap()

    def kill(self) -> None:
        """Kill the server abruptly with SIGKILL (for fault tests)."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=self._stop_timeout)
        self._reap()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and passwords."""
        self.stop()
        self.start()

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        if self._process is None and self._out is not None:
            self._out.close()
            self._out = None

    # -------------------------------------------------------------------- logs

    def log_text(self) -> str:
        parts = []
        for name in ("redis.log", "redis.stdout"):
            path = self._dir / name
            if path.exists() and (text := path.read_text(errors="replace")):
                parts.append(text)
        return "\n".join(parts)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {state} {self._host}:{self._port} dir={self._dir}>"
