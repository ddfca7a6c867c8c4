"""The ``udp2xmpp`` command: run the bridge, or check a config."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

import click

from .config import BridgeConfig, ConfigError, load_config
from .effective import effective_toml
from .logs import setup_logging
from .route import Router, RoutingError

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("udp2xmpp")


@click.group(invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Default: log.level from the config, else info.",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(["auto", "json", "text"]),
    help="JSON lines, or text; auto: text on a terminal, JSON otherwise "
    "(default: log.format from the config, else auto).",
)
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, log_level: str | None, log_format: str | None
) -> None:
    """Bridge wiki recent changes from UDP datagrams into XMPP rooms.

    Run it with: udp2xmpp --config bridge.toml
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("--config FILE is required")
    config = _load(config_path)
    setup_logging(log_format or config.log.format, log_level or config.log.level)
    sys.exit(asyncio.run(run(config, config_path)))


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.pass_context
def check(ctx: click.Context, config_path: str | None) -> None:
    """Validate a config file and print the effective config, as TOML (secrets hidden)."""
    path = config_path or ctx.obj.get("config_path")
    if path is None:
        raise click.UsageError("--config FILE is required")
    config = _load(path)
    click.echo(f"# {config.source}: valid")
    click.echo("# The effective config: every key, defaults filled in; secrets shown as ***.")
    rooms = Router.from_settings(config.rooms).static_rooms
    click.echo("# Rooms joined at startup: " + (", ".join(room.jid for room in rooms) or "-"))
    click.echo(effective_toml(config), nl=False)


def _load(path: str) -> BridgeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"udp2xmpp: invalid config: {exc}", err=True)
        sys.exit(2)


async def run(config: BridgeConfig, config_path: str | None = None) -> int:
    """Run until SIGTERM or SIGINT, then drain and leave. Returns the exit status.

    With `config_path`, SIGHUP re-reads that file and reloads the routing.
    """
    from .bridge import Bridge

    bridge = Bridge(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bridge.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await bridge.stop(drain_timeout=0)
        return 1
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, bridge, config_path)
    stopping = loop.create_task(stop.wait())
    failing = loop.create_task(bridge.failed.wait())
    await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopping, failing):
        task.cancel()
    await asyncio.gather(stopping, failing, return_exceptions=True)
    loop.remove_signal_handler(signal.SIGHUP)  # no reload while stopping
    if bridge.failure is not None:  # a room the config names is not ours: say so, exit
        await bridge.stop(drain_timeout=0)
        return 1
    log.info("stopping: draining queues")
    await bridge.stop()
    log.info("stopped")
    return 0


def _reload(bridge: Bridge, path: str) -> None:
    """SIGHUP: re-read the config; apply its routing, or keep the old one if it is invalid."""
    log.info("SIGHUP: reloading the routing from %s", path)
    try:
        config = load_config(path)
        bridge.reload(config)
    except (ConfigError, RoutingError) as exc:
        log.error("reload failed, keeping the old routing: invalid config: %s", exc)
