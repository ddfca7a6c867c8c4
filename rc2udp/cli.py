"""The ``rc2udp`` command."""

from __future__ import annotations

import asyncio
import sys
import time

import click

from xmlrc_emitter import AsyncEmitter, DatagramFormat, RecentChange

from .replay import read_changes, rounds


@click.group()
def main() -> None:
    """Send wiki recent changes to a udp2xmpp bridge as UDP datagrams."""


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="127.0.0.1:9390", show_default=True, help="Bridge HOST:PORT.")
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
    type=click.Choice([f.value for f in DatagramFormat] + ["mixed"]),
    help="Datagram format; 'mixed' rotates through all of them.",
)
@click.option("--loop", is_flag=True, help="Replay forever, with fresh ids and times each round.")
def replay(file: str, target: str, speed: str, fmt: str, loop: bool) -> None:
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
    try:
        sent = asyncio.run(_replay(changes, host.strip("[]"), int(port), rate, fmt, loop))
    except KeyboardInterrupt:
        return
    click.echo(f"sent {sent} changes to {target}", err=True)


async def _replay(
    changes: list[RecentChange], host: str, port: int, rate: float, fmt: str, loop: bool
) -> int:
    formats = list(DatagramFormat) if fmt == "mixed" else [DatagramFormat(fmt)]
    emitters = [AsyncEmitter(host, port, fmt=f) for f in formats]
    start = time.monotonic()
    sent = 0
    try:
        for _round, change in rounds(changes, loop):
            await emitters[sent % len(emitters)].send(change)
            sent += 1
            if rate:
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif sent % 256 == 0:
                await asyncio.sleep(0)
    finally:
        for emitter in emitters:
            emitter.close()
    return sent
