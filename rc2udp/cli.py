"""The ``rc2udp`` command: ``poll`` a wiki's API to a bridge, ``record`` to a file, ``replay``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from xmlrc.wire.datagram import BRIDGE_ADDRESS
from xmlrc_emitter import AsyncEmitter, DatagramFormat, RecentChange

from .api import ApiClient, ApiError, user_agent
from .config import ConfigError, PollConfig, build_config, load_toml, parse_since
from .limits import Limits
from .poll import ChangeSink, JsonLinesSink, UdpSink, WikiPoller
from .replay import read_changes, rounds
from .state import StateError, StateFile

log = logging.getLogger("rc2udp")

_FORMATS = [f.value for f in DatagramFormat]
_LIMITS = Limits()  # the defaults, for the help texts


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debugging).")
def main(verbose: int) -> None:
    """Send wiki recent changes to a udp2xmpp bridge as UDP datagrams."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="rc2udp: %(levelname)s: %(message)s", stream=sys.stderr)


_secret_option = click.option(
    "--secret-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="RC2UDP_SECRET_FILE",
    help="Sign every datagram with the shared secret in this file (the bridge's udp.secret).",
)


def _read_secret(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        secret = file.read().strip()
    if not secret:
        _fail(f"--secret-file: {path} is empty")
    return secret


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"rc2udp: {message}", err=True)
    sys.exit(code)


# -- poll and record: the API side --------------------------------------------------


def _api_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``poll`` and ``record``: how to talk to the wikis."""
    options = [
        click.option(
            "--api", "apis", multiple=True, help="A wiki's api.php URL (repeat for several)."
        ),
        click.option("--contact", help="E-mail or URL for the User-Agent (Wikimedia asks)."),
        click.option("--user-agent", help="The whole User-Agent, instead of the default one."),
        click.option(
            "--maxlag",
            type=int,
            help="Leave the wiki alone while its database lags more (s; default 5, -1 off).",
        ),
        click.option("--login", help="Bot password user (Name@appid), e.g. for patrol flags."),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False),
            help="File holding the bot password (or set RC2UDP_PASSWORD).",
        ),
        click.option("--state", type=click.Path(dir_okay=False), help="State file to resume from."),
        click.option("--lookback", type=float, help="Seconds re-read each poll (default 10)."),
        click.option(
            "--page-delay",
            type=float,
            help=f"Seconds between continuation pages (default {_LIMITS.page_delay:g}; 0: none).",
        ),
        click.option(
            "--max-pages",
            type=int,
            help=f"Pages per round at most; the next round goes on (default {_LIMITS.max_pages}).",
        ),
        click.option(
            "--max-response-bytes",
            type=int,
            help=f"Refuse larger API answers (default {_LIMITS.max_response_bytes}, 16 MiB).",
        ),
        click.option(
            "--max-redirects",
            type=int,
            help=f"Same-origin redirects followed (default {_LIMITS.max_redirects}); "
            "a redirect to another origin is never followed.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _password(password_file: str | None) -> str | None:
    if password_file is not None:
        try:
            return Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            _fail(f"--password-file: cannot read {password_file}: {exc.strerror}")
    return os.environ.get("RC2UDP_PASSWORD") or None


def _config(
    config_file: str | None,
    apis: tuple[str, ...],
    login: str | None,
    password_file: str | None,
    overrides: dict[str, Any],
) -> PollConfig:
    if overrides.get("state_file") is not None:
        overrides["state_file"] = str(Path(overrides["state_file"]).resolve())
    try:
        data = load_toml(config_file) if config_file else {}
        base_dir = Path(config_file).resolve().parent if config_file else Path.cwd()
        return build_config(
            data,
            base_dir=base_dir,
            apis=apis,
            login=login,
            password=_password(password_file) if login else None,
            overrides=overrides,
        )
    except ConfigError as exc:
        _fail(f"invalid config: {exc}")


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`: the pollers finish their page and return."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _run_pollers(
    config: PollConfig,
    sink: ChangeSink,
    *,
    once: bool,
    until: str | None = None,
) -> int:
    """Poll every wiki of `config` into `sink`; 0 on success, 1 if a wiki failed."""
    stop = asyncio.Event()
    agent = config.user_agent or user_agent(config.contact)
    state = StateFile(config.state_file)
    since = parse_since(config.since)
    clients = [
        ApiClient(w.api, user_agent=agent, maxlag=config.maxlag, limits=config.limits)
        for w in config.wikis
    ]
    pollers = [
        WikiPoller(
            client,
            sink,
            state,
            since=since,
            login=(wiki.login, wiki.password or "") if wiki.login else None,
            interval=config.interval,
            lookback=timedelta(seconds=config.lookback),
            until=parse_since(until) if until else None,
        )
        for wiki, client in zip(config.wikis, clients, strict=True)
    ]
    failed = False
    with _stop_on_signals(stop):
        try:
            async with asyncio.TaskGroup() as group:
                for poller in pollers:
                    group.create_task(poller.run(stop, once=once))
        except* ApiError as errors:
            failed = True
            for error in errors.exceptions:
                log.error("%s", error)
        finally:
            for client in clients:
                await client.close()
    for poller in pollers:
        name = poller.site.wiki if poller.site else poller.api
        log.info(
            "%s: %d changes in %d pages, %d undecodable, %d repeated by the API",
            name,
            poller.stats.sent,
            poller.stats.pages,
            poller.stats.undecodable,
            poller.stats.duplicates,
        )
    return 1 if failed else 0


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file: wikis, targets, state file... (see examples/rc2udp.toml).",
)
@_api_options
@click.option(
    "--target",
    "targets",
    multiple=True,
    help=f"Bridge HOST:PORT (repeat for several; default {BRIDGE_ADDRESS}).",
)
@click.option("--format", "fmt", type=click.Choice(_FORMATS), help="Datagram format (xmlrc).")
@click.option("--prefix", help="Line prefix before every datagram line.")
@click.option("--interval", type=float, help="Seconds between polls of a wiki (default 10).")
@click.option(
    "--since", help="Start of a wiki without state: now (default), ISO time, or 90m, 2h, 3d."
)
@click.option("--once", is_flag=True, help="Poll each wiki once (to the present), then exit.")
@_secret_option
def poll(
    config_file: str | None,
    apis: tuple[str, ...],
    contact: str | None,
    user_agent: str | None,
    maxlag: int | None,
    login: str | None,
    password_file: str | None,
    state: str | None,
    lookback: float | None,
    page_delay: float | None,
    max_pages: int | None,
    max_response_bytes: int | None,
    max_redirects: int | None,
    targets: tuple[str, ...],
    fmt: str | None,
    prefix: str | None,
    interval: float | None,
    since: str | None,
    once: bool,
    secret_file: str | None,
) -> None:
    """Poll wikis' api.php (list=recentchanges) and send every change to the bridges.

    Each change is sent once: the resume point of every wiki (the time of its
    newest change sent, and the rcids sent around it) is saved in the state
    file after every page, so a restart continues without a gap or a repeat.
    """
    config = _config(
        config_file,
        apis,
        login,
        password_file,
        {
            "contact": contact,
            "user_agent": user_agent,
            "maxlag": maxlag,
            "state_file": state,
            "lookback": lookback,
            "page_delay": page_delay,
            "max_pages": max_pages,
            "max_response_bytes": max_response_bytes,
            "max_redirects": max_redirects,
            "targets": list(targets) or None,
            "format": fmt,
            "prefix": prefix,
            "interval": interval,
            "since": since,
        },
    )

    async def run() -> tuple[int, int]:
        sink = UdpSink(config.targets, config.format, config.prefix, _read_secret(secret_file))
        try:
            return await _run_pollers(config, sink, once=once), sink.sent
        finally:
            sink.close()

    try:
        code, sent = asyncio.run(run())
    except StateError as exc:
        _fail(str(exc), 1)
    targets_text = ", ".join(str(t) for t in config.targets)
    click.echo(f"rc2udp: sent {sent} datagrams to {targets_text}", err=True)
    sys.exit(code)


@main.command()
@_api_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON-lines file.")
@click.option("--since", default="1h", show_default=True, help="From: ISO time, or 90m, 2h, 3d.")
@click.option("--until", "until", help="To (default: the present): ISO time or 90m, 2h...")
@click.option("--follow", is_flag=True, help="Keep polling and appending until stopped.")
@click.option("--interval", type=float, help="Seconds between polls with --follow (default 10).")
def record(
    apis: tuple[str, ...],
    contact: str | None,
    user_agent: str | None,
    maxlag: int | None,
    login: str | None,
    password_file: str | None,
    state: str | None,
    lookback: float | None,
    page_delay: float | None,
    max_pages: int | None,
    max_response_bytes: int | None,
    max_redirects: int | None,
    out: str,
    since: str,
    until: str | None,
    follow: bool,
    interval: float | None,
) -> None:
    """Record wikis' recent changes to a JSON-lines file, for `rc2udp replay`.

    One JSON object a line, in the shape of Wikimedia's EventStreams
    recentchange events plus the API-only fields (pageid, userid, tags...).
    """
    if not apis:
        _fail("record needs --api URL")
    config = _config(
        None,
        apis,
        login,
        password_file,
        {
            "contact": contact,
            "user_agent": user_agent,
            "maxlag": maxlag,
            "state_file": state,
            "lookback": lookback,
            "page_delay": page_delay,
            "max_pages": max_pages,
            "max_response_bytes": max_response_bytes,
            "max_redirects": max_redirects,
            "interval": interval,
            "since": since,
        },
    )
    with open(out, "a", encoding="utf-8") as handle:
        sink = JsonLinesSink(handle)
        try:
            code = asyncio.run(_run_pollers(config, sink, once=not follow, until=until))
        except StateError as exc:
            _fail(str(exc), 1)
    click.echo(f"rc2udp: recorded {sink.sent} changes to {out}", err=True)
    sys.exit(code)


# -- replay --------------------------------------------------------------------------


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default=BRIDGE_ADDRESS, show_default=True, help="Bridge HOST:PORT.")
@click.option(
    "--speed",
    default="10",
    show_default=True,
    help="Changes per second, or 'max' for as fast as possible.",
)
@click.option(
    "--format",
    "fmt",
    default="xmlrc",
    show_default=True,
    type=click.Choice([*_FORMATS, "mixed"]),
    help="Datagram format; 'mixed' rotates through all of them.",
)
@click.option("--loop", is_flag=True, help="Replay forever, with fresh ids and times each round.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: on a terminal, without --loop).",
)
@_secret_option
def replay(
    file: str,
    target: str,
    speed: str,
    fmt: str,
    loop: bool,
    progress: bool | None,
    secret_file: str | None,
) -> None:
    """Replay the changes recorded in FILE (JSON lines) to a bridge."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--target")
    if speed != "max":
        try:
            rate = float(speed)
        except ValueError:
            raise click.BadParameter("a number or 'max'", param_hint="--speed") from None
        if rate <= 0:
            raise click.BadParameter("must be positive", param_hint="--speed")
    else:
        rate = 0.0
    try:
        changes = read_changes(file)
    except ValueError as exc:
        click.echo(f"rc2udp: {exc}", err=True)
        sys.exit(1)
    # By default a bar on a terminal, but not for --loop: it never ends, and the demo
    # shares its terminal with `rcclient tail`.
    show = (sys.stderr.isatty() and not loop) if progress is None else progress
    bar = _Progress(len(changes), loop) if show and changes else None
    on_sent = bar.advance if bar is not None else None
    try:
        sent = asyncio.run(
            _replay(
                changes,
                host.strip("[]"),
                int(port),
                rate,
                fmt,
                loop,
                on_sent,
                secret=_read_secret(secret_file),
            )
        )
    except KeyboardInterrupt:
        return
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"sent {sent} changes to {target}", err=True)


class _Progress:
    """click's progress bar on stderr: one pass, or one bar per round with --loop."""

    def __init__(self, length: int, loop: bool) -> None:
        self.length = length
        self.loop = loop
        self.round = 0
        self.done = 0
        self._bar: Any = None
        self._open()

    def _open(self) -> None:
        label = f"round {self.round + 1}" if self.loop else "replaying"
        self._bar = click.progressbar(length=self.length, label=label, file=sys.stderr, width=30)
        self._bar.__enter__()

    def advance(self) -> None:
        self._bar.update(1)
        self.done += 1
        if self.loop and self.done % self.length == 0:
            self._bar.__exit__(None, None, None)
            self.round += 1
            self._open()

    def close(self) -> None:
        self._bar.__exit__(None, None, None)


async def _replay(
    changes: list[RecentChange],
    host: str,
    port: int,
    rate: float,
    fmt: str,
    loop: bool,
    on_sent: Callable[[], None] | None = None,
    secret: str | None = None,
) -> int:
    """Send `changes` (forever with `loop`) at `rate` a second (0: at once); the number sent."""
    formats = list(DatagramFormat) if fmt == "mixed" else [DatagramFormat(fmt)]
    emitters = [AsyncEmitter(host, port, fmt=f, secret=secret) for f in formats]
    start = time.monotonic()
    done = failed = 0
    try:
        for _round, change in rounds(changes, loop):
            try:
                await emitters[done % len(emitters)].send(change)
            except OSError as exc:  # nothing listens there (yet): UDP loses it, go on
                if not failed:
                    click.echo(f"rc2udp: sending to {host}:{port} failed: {exc}", err=True)
                failed += 1
            done += 1
            if on_sent is not None:
                on_sent()
            if rate:
                delay = start + done / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif done % 256 == 0:
                await asyncio.sleep(0)
    finally:
        for emitter in emitters:
            emitter.close()
    return done - failed
