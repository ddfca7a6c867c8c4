"""A throwaway MediaWiki for the tests and benchmarks: a real wiki on loopback.

This module is responsible for one thing: bringing up a private, disposable
MediaWiki (Debian 12's ``mediawiki`` package, SQLite, PHP's built-in web
server ``php -S``) whose recent changes also leave as UDP datagrams through
core ``$wgRCFeeds``, and tearing it down again.  :class:`MediaWikiServer`

* installs the Debian packages when they are missing (as root, with apt;
  an empty local package provides ``httpd`` so Apache is not pulled in),
* runs ``install.php`` into a working directory (SQLite database, generated
  ``LocalSettings.php``), creates a bot account and bot passwords,
* writes ``$wgRCFeeds`` (and ``$wgServer``) into ``runtime.php``, which
  ``LocalSettings.php`` includes on every request, so feeds can be changed
  while the wiki runs,
* runs ``php -S`` as a child process on a free loopback port and waits until
  ``api.php`` answers, and stops it again.

The wiki: ``Admin`` (sysop, bureaucrat) and ``BridgeBot`` (bot), each with a
bot password (``Admin@xmlrc``, ``BridgeBot@xmlrc``) for ``action=login``;
no rate limits for anyone; e-mail off; the job queue does not run during
web requests (``$wgJobRunRate = 0``), so a request does only its own work.

Standard library only, no threads: usable from synchronous code and from
inside a running asyncio loop (its blocking waits are short and bounded).
Failing to install or start raises :class:`MediaWikiError` (a
``RuntimeError``) with the relevant log: tests fail, they do not skip.
Not meant for production.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .throwaway import ThrowawayServer

__all__ = [
    "MEDIAWIKI_DIR",
    "PACKAGES",
    "REDIS_ENGINE",
    "UDP_ENGINE",
    "MediaWikiError",
    "MediaWikiServer",
    "RCFeed",
    "install_packages",
    "missing_packages",
]

#: Where Debian's ``mediawiki`` package puts the code.
MEDIAWIKI_DIR = Path("/usr/share/mediawiki")
#: The Debian packages the wiki needs (``php8.2-cgi`` satisfies ``php8.2``'s
#: dependency on a web SAPI without Apache's module or FPM).
PACKAGES = ("mediawiki", "php-sqlite3", "php-cli", "php8.2-cgi")
_DUMMY_HTTPD = "xmlrc-httpd-dummy"
_DUMMY_CONTROL = f"""\
Package: {_DUMMY_HTTPD}
Version: 1.0
Architecture: all
Maintainer: xmlrc <root@localhost>
Provides: httpd
Description: empty package satisfying mediawiki's "apache2 | httpd"
 The xmlrc tests serve MediaWiki with PHP's built-in server (php -S).
"""
_NOT_INSTALLED = (
    "MediaWiki is not installed and this process is not root: as root run "
    "`bash scripts/install.sh` (or apt-get install " + " ".join(PACKAGES) + ")"
)


class MediaWikiError(RuntimeError):
    """MediaWiki could not be installed, set up, started or driven as asked."""


class _PortTakenError(MediaWikiError):
    """Another process holds the port ``php -S`` was told to listen on."""


def _engine(name: str) -> str:
    """The ``'class'`` of a feed engine, as PHP that works on 1.39 and later: the
    namespaced class (1.43+; 1.46 requires ``'class'``) if it exists, else the
    global name 1.39 has (``::class`` of a missing class is only a string)."""
    return (
        f"class_exists( \\MediaWiki\\RCFeed\\{name}::class ) "
        f"? \\MediaWiki\\RCFeed\\{name}::class : '{name}'"
    )


#: ``'class'`` for ``udp://`` feeds, and for ``redis://`` feeds (needs php-redis).
UDP_ENGINE = _engine("UDPRCFeedEngine")
REDIS_ENGINE = _engine("RedisPubSubFeedEngine")


@dataclass(frozen=True, slots=True)
class RCFeed:
    """One ``$wgRCFeeds`` entry: where MediaWiki sends its datagrams, and how.

    ``uri`` is ``udp://host:port`` or ``udp://host:port/PREFIX`` (MediaWiki
    then starts every line with ``PREFIX``), or ``redis://:PASSWORD@host:port/CHANNEL``
    (PUBLISHed on CHANNEL; a ``/`` in it becomes ``.``); ``formatter`` is
    ``JSONRCFeedFormatter``, ``XMLRCFeedFormatter`` or
    ``IRCColourfulRCFeedFormatter``.  ``engine`` is the ``'class'`` key, PHP
    code (`UDP_ENGINE`, `REDIS_ENGINE`); None: no ``'class'`` (1.39 picks the
    engine from the URI's scheme).
    """

    uri: str
    formatter: str = "JSONRCFeedFormatter"
    omit_bots: bool = False
    engine: str | None = None


def _php_str(value: str) -> str:
    """Quote ``value`` as a single-quoted PHP string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0 and result.stdout.decode().strip() == "install ok installed"


def missing_packages() -> list[str]:
    """The packages of :data:`PACKAGES` that are not installed (all of them without dpkg)."""
    if shutil.which("dpkg-query") is None:
        return list(PACKAGES)
    return [package for package in PACKAGES if not _installed(package)]


def _run(
    command: list[str], what: str, timeout: float, env: Mapping[str, str] | None = None
) -> str:
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except subprocess.TimeoutExpired:
        raise MediaWikiError(f"{what} took longer than {timeout:g} s") from None
    output = (result.stdout + result.stderr).decode(errors="replace").strip()
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise MediaWikiError(f"{what} failed (exit status {result.returncode}):\n{tail}")
    return output


def install_packages(timeout: float = 900.0) -> None:
    """Install whatever of :data:`PACKAGES` is missing (root only; apt).

    ``mediawiki`` depends on ``apache2 | httpd``: an empty local package
    that provides ``httpd`` is installed first so Apache is not pulled in.
    Does nothing when everything is installed.
    """
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise MediaWikiError(_NOT_INSTALLED)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise MediaWikiError("apt-get/dpkg-deb not found: install " + " ".join(PACKAGES))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    if not _installed(_DUMMY_HTTPD):
        with tempfile.TemporaryDirectory(prefix="xmlrc-httpd-") as tmp:
            control = Path(tmp, "pkg", "DEBIAN", "control")
            control.parent.mkdir(parents=True)
            control.write_text(_DUMMY_CONTROL)
            deb = Path(tmp, f"{_DUMMY_HTTPD}.deb")
            _run(["dpkg-deb", "--build", str(control.parent.parent), str(deb)], "dpkg-deb", left())
            _run(["dpkg", "-i", str(deb)], f"dpkg -i {_DUMMY_HTTPD}", left(), env)
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    try:
        _run(install, "apt-get install", left(), env)
    except MediaWikiError:
        # Perhaps the package lists are stale or absent (a fresh container).
        _run(["apt-get", "update", "-qq"], "apt-get update", left(), env)
        _run(install, "apt-get install", left(), env)
    if still := missing_packages():
        raise MediaWikiError("apt-get did not install " + " ".join(still))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MediaWikiServer(ThrowawayServer):
    """A private MediaWiki on loopback, served by ``php -S`` as a child process.

    Typical use::

        with MediaWikiServer(wiki_id="testwiki") as wiki:   # sets up, starts; stops on exit
            wiki.set_rc_feeds({"json": RCFeed("udp://127.0.0.1:9390")})
            ...edit through wiki.api_url, logged in as wiki.admin_login...

    ``directory`` holds everything (``LocalSettings.php``, the SQLite
    database, logs).  When it is omitted a temporary directory is made and
    removed by :meth:`cleanup` (which leaving the ``with`` block calls); a
    directory passed in is never removed.  The wiki is set up (``install.php``)
    on the first :meth:`start`; the port is chosen then and kept across
    :meth:`restart`.  ``install=True`` installs missing Debian packages
    (root only); otherwise missing packages raise :class:`MediaWikiError`.
    """

    admin_user = "Admin"
    bot_user = "BridgeBot"
    #: The bot-password application id: log in as ``Admin@xmlrc``.
    app_id = "xmlrc"
    _admin_grants = (
        "basic,highvolume,editpage,createeditmovepage,delete,protect,"
        "createaccount,patrol,blockusers"
    )
    _bot_grants = "basic,highvolume,editpage,createeditmovepage"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        wiki_id: str = "testwiki",
        host: str = "127.0.0.1",
        install: bool = True,
        workers: int = 1,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        command_timeout: float = 120.0,
    ) -> None:
        if not wiki_id.isidentifier() or not wiki_id.isascii():
            raise ValueError(f"wiki_id must be a plain ASCII name, not {wiki_id!r}")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if install:
            install_packages()
        php = shutil.which("php")
        if missing_packages() or php is None:
            raise MediaWikiError(
                "MediaWiki is not installed: run `bash scripts/install.sh` as root "
                "(or apt-get install " + " ".join(PACKAGES) + ")"
            )
        self._php = php
        self._wiki_id = wiki_id
        self._host = host
        self._workers = workers
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._command_timeout = command_timeout
        if directory is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mediawiki-")).resolve()
            self._owns_dir = True
        else:
            self._dir = Path(directory).resolve()
            self._dir.mkdir(parents=True, exist_ok=True)
            self._owns_dir = False
        port_file = self._dir / "port"
        self._port: int | None = int(port_file.read_text()) if port_file.exists() else None
        self._has_started = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._feeds: dict[str, RCFeed] = {}

    # ----------------------------------------------------------------- paths

    @property
    def directory(self) -> Path:
        """The working directory: configuration, database, logs."""
        return self._dir

    @property
    def local_settings(self) -> Path:
        """The generated ``LocalSettings.php`` (``MW_CONFIG_FILE``)."""
        return self._dir / "conf" / "LocalSettings.php"

    @property
    def runtime_settings(self) -> Path:
        """``runtime.php``: ``$wgServer`` and ``$wgRCFeeds``, read on every request."""
        return self._dir / "conf" / "runtime.php"

    @property
    def log_file(self) -> Path:
        """What ``php -S`` wrote (one line per request, PHP errors)."""
        return self._dir / "php-server.log"

    @property
    def _data_dir(self) -> Path:
        return self._dir / "data"

    # --------------------------------------------------------- connectivity

    @property
    def wiki_id(self) -> str:
        """The wiki ID (``$wgDBname``): what the feeds and ``meta=siteinfo`` call it."""
        return self._wiki_id

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The HTTP port (chosen at the first start)."""
        if self._port is None:
            raise MediaWikiError("the wiki has not been started yet")
        return self._port

    @property
    def server_url(self) -> str:
        """``$wgServer``, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.server_url}/api.php"

    @property
    def index_url(self) -> str:
        return f"{self.server_url}/index.php"

    @property
    def admin_login(self) -> tuple[str, str]:
        """(``Admin@xmlrc``, bot password): a sysop session for ``action=login``."""
        return f"{self.admin_user}@{self.app_id}", self._secret("admin-bot-password")

    @property
    def bot_login(self) -> tuple[str, str]:
        """(``BridgeBot@xmlrc``, bot password): a bot session for ``action=login``."""
        return f"{self.bot_user}@{self.app_id}", self._secret("bot-bot-password")

    @property
    def admin_password(self) -> str:
        """``Admin``'s main password (web UI, ``action=clientlogin``)."""
        return self._secret("admin-password")

    def _secret(self, name: str) -> str:
        """A password of this wiki: made at random once, kept in the directory."""
        path = self._dir / "secrets.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        if name not in known:
            known[name] = secrets.token_hex(16)
            path.touch(mode=0o600)
            path.write_text(json.dumps(known))
        return str(known[name])

    # ------------------------------------------------------------------ setup

    @property
    def is_set_up(self) -> bool:
        return (self._dir / ".setup-done").exists()

    def setup(self) -> None:
        """Run ``install.php``, add the test settings and the accounts (once)."""
        if self.is_set_up:
            return
        if self._port is None:
            self._set_port(_free_port(self._host))
        conf = self.local_settings.parent
        for path in (self.local_settings, self.runtime_settings):
            path.unlink(missing_ok=True)
        shutil.rmtree(self._data_dir, ignore_errors=True)
        conf.mkdir(parents=True, exist_ok=True)
        self._data_dir.mkdir(parents=True)
        self.maintenance(
            "install.php",
            *("--quiet", "--dbtype", "sqlite", "--dbpath", str(self._data_dir)),
            *("--dbname", self._wiki_id, "--server", f"http://{self._host}:{self._port}"),
            *("--scriptpath", "", "--lang", "en", "--pass", self.admin_password),
            *("--confpath", str(conf), "--skins", "Vector", "Test Wiki", self.admin_user),
        )
        self._write_runtime()
        with self.local_settings.open("a", encoding="utf-8") as settings:
            settings.write(self._additions())
        self.maintenance(
            "createAndPromote.php", "--bot", self.bot_user, self._secret("bot-password")
        )
        for user, password, grants in (
            (self.admin_user, self.admin_login[1], self._admin_grants),
            (self.bot_user, self.bot_login[1], self._bot_grants),
        ):
            self.maintenance(
                "createBotPassword.php",
                *("--appid", self.app_id, "--grants", grants, user, password),
            )
        (self._dir / ".setup-done").touch()

    def _additions(self) -> str:
        return f"""
# ---- added by harness.mediawiki for a throwaway test wiki ----
$wgEnableEmail = false;
$wgGroupPermissions['*']['noratelimit'] = true;
$wgJobRunRate = 0;
$wgShowExceptionDetails = true;
require {_php_str(str(self.runtime_settings))};
"""

    def maintenance(self, script: str, *args: str) -> str:
        """Run a maintenance script for this wiki; returns its output."""
        return _run(
            [self._php, str(MEDIAWIKI_DIR / "maintenance" / script), *args],
            f"{script} ({self._dir})",
            self._command_timeout,
            self._env(),
        )

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "MW_CONFIG_FILE": str(self.local_settings)}
        env.pop("PHP_CLI_SERVER_WORKERS", None)
        if self._workers > 1:
            env["PHP_CLI_SERVER_WORKERS"] = str(self._workers)
        return env

    # -------------------------------------------------------------- RC feeds

    @property
    def rc_feeds(self) -> dict[str, RCFeed]:
        return dict(self._feeds)

    def set_rc_feeds(self, feeds: Mapping[str, RCFeed]) -> None:
        """Replace ``$wgRCFeeds``; takes effect with the next request."""
        self._feeds = dict(feeds)
        if self.local_settings.exists():
            self._write_runtime()

    def _set_port(self, port: int) -> None:
        self._port = port
        (self._dir / "port").write_text(f"{port}\n")  # a later object on this directory reuses it

    def _write_runtime(self) -> None:
        lines = ["<?php", "# Written by harness.mediawiki; replaced while the wiki runs."]
        lines.append(f"$wgServer = {_php_str(self.server_url)};")
        lines.append("$wgRCFeeds = [];")
        for name, feed in self._feeds.items():
            engine = "" if feed.engine is None else f" 'class' => {feed.engine},"
            lines.append(
                f"$wgRCFeeds[{_php_str(name)}] = [{engine}"
                f" 'uri' => {_php_str(feed.uri)},"
                f" 'formatter' => {_php_str(feed.formatter)},"
                f" 'omit_bots' => {'true' if feed.omit_bots else 'false'},"
                " 'add_interwiki_prefix' => false ];"
            )
        temporary = self.runtime_settings.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, self.runtime_settings)

    # ------------------------------------------------------------- lifecycle

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Set up if needed, start ``php -S`` and wait until ``api.php`` answers.

        Raises :class:`MediaWikiError` with the end of the server's log if it
        exits or does not answer within ``start_timeout`` seconds.  If another
        process took the port before the first start, a fresh one is picked
        (at most three times); after a first successful start it never changes.
        """
        if self.running:
            raise MediaWikiError("the wiki is already running")
        self.setup()
        for attempt in range(3):
            try:
                self._start_once()
            except _PortTakenError:
                if self._has_started or attempt == 2:
                    raise
                self._set_port(_free_port(self._host))
                self._write_runtime()
            else:
                self._has_started = True
                return

    def _start_once(self) -> None:
        self._reap()
        self._log_handle = self.log_file.open("ab")
        offset = self.log_file.stat().st_size
        self._process = subprocess.Popen(
            [
                self._php,
                *("-d", "opcache.revalidate_freq=0", "-d", "display_errors=stderr"),
                *("-S", f"{self._host}:{self.port}", "-t", str(MEDIAWIKI_DIR)),
            ],
            cwd=MEDIAWIKI_DIR,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._start_timeout
        url = f"{self.api_url}?action=query&meta=siteinfo&format=json&formatversion=2"
        while True:
            code = self._process.poll()
            output = self._output_since(offset)
            if code is not None or "Failed to listen" in output:
                self.stop()
                tail = self._tail_since(offset)
                if "Address already in use" in output:
                    raise _PortTakenError(f"port {self.port} is taken" + tail)
                raise MediaWikiError(f"php -S exited with status {code} while starting" + tail)
            # php -S says "Development Server (...) started" once it listens.
            try:
                if "started" in output and self._answers(url):
                    return
            except MediaWikiError as exc:
                self.stop()
                raise MediaWikiError(str(exc) + self._tail_since(offset)) from None
            if time.monotonic() > deadline:
                self.stop()
                raise MediaWikiError(
                    f"MediaWiki did not answer on {self.api_url} within "
                    f"{self._start_timeout:g} s" + self._tail_since(offset)
                )
            time.sleep(0.05)

    def _answers(self, url: str) -> bool:
        """Whether this wiki's API answers; a wiki that answers with an error raises."""
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            raise MediaWikiError(
                f"MediaWiki answered HTTP {exc.code} on {url}: {body[:2000]!r}"
            ) from None
        except OSError:
            return False  # not listening yet
        try:
            general = json.loads(body)["query"]["general"]
        except (ValueError, KeyError, TypeError):
            # Listening, but PHP failed (a fatal error answers 200 and no JSON).
            raise MediaWikiError(
                f"MediaWiki answered {url} with no siteinfo: {body[:2000]!r}"
            ) from None
        if general.get("wikiid") != self._wiki_id:
            raise MediaWikiError(
                f"another wiki answers on {url}: {general.get('wikiid')!r}, not {self._wiki_id!r}"
            )
        return True

    def stop(self) -> None:
        """Stop ``php -S``: SIGTERM, then SIGKILL after ``stop_timeout`` s."""
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

    def restart(self) -> None:
        self.stop()
        self.start()

    # ------------------------------------------------------------------ logs

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _output_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail_since(self, offset: int = 0, lines: int = 40) -> str:
        tail = "\n".join(self._output_since(offset).splitlines()[-lines:])
        return f"\n--- last log lines ({self.log_file}) ---\n{tail}" if tail else ""

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        if self._process is None and self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f"{self._host}:{self._port}" if self._port else "no port yet"
        return f"<MediaWikiServer {self._wiki_id} {state} {where} dir={self._dir}>"
