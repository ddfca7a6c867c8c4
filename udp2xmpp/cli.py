"""The ``udp2xmpp`` command: run the bridge, or check a config."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click

from .config import BridgeConfig, ConfigError, load_config

log = logging.getLogger("udp2xmpp")


@click.group(invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str) -> None:
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
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("slixmpp").setLevel(max(logging.WARNING, logging.getLogger().level))
    sys.exit(asyncio.run(run(config)))


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.pass_context
def check(ctx: click.Context, config_path: str | None) -> None:
    """Validate a config file and print the effective settings (secrets hidden)."""
    path = config_path or ctx.obj.get("config_path")
    if path is None:
        raise click.UsageError("--config FILE is required")
    config = _load(path)
    click.echo(f"# {config.source}: valid")
    click.echo(
        f"xmpp: jid={config.xmpp.jid} host={config.xmpp.host or '(from jid)'} "
        f"port={config.xmpp.port} ca_file={config.xmpp.ca_file} password=***"
    )
    click.echo(
        f"udp: listen={', '.join(f'{h}:{p}' for h, p in config.udp.listen)} "
        f"receive_buffer={config.udp.receive_buffer}"
    )
    click.echo(f"rooms: {config.rooms.room}@{config.rooms.service} nick={config.rooms.nick}")
    click.echo(f"delivery: queue_size={config.delivery.queue_size}")


def _load(path: str) -> BridgeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"udp2xmpp: invalid config: {exc}", err=True)
        sys.exit(2)


async def run(config: BridgeConfig) -> int:
    """Run until SIGTERM or SIGINT, then drain and leave. Returns the exit status."""
    from .bridge import Bridge

    bridge = Bridge(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bridge.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await bridge.stop(drain_timeout=0)
        return 1
    await stop.wait()
    log.info("stopping: draining queues")
    await bridge.stop()
    log.info("stopped")
    return 0
