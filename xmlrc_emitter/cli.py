"""The ``xmlrc-emit`` command: send changes given as JSON on stdin or as options.

echo '{"wiki":"enwiki","type":"edit","namespace":0,"title":"Foo",...}' | xmlrc-emit
xmlrc-emit --wiki enwiki --title Foo --user Alice --comment "typo" --rcid 14
xmlrc-emit --secret-file /etc/xmlrc/udp-secret ...    # signed datagrams
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from xmlrc.wire import DatagramFormat, DecodeError, RecentChange, change_from_json
from xmlrc.wire.datagram import BRIDGE_ADDRESS

from .emitter import Emitter

SECRET_ENV = "XMLRC_SECRET"  # noqa: S105 - a variable name, not a secret


@click.command()
@click.option("--target", default=BRIDGE_ADDRESS, show_default=True, help="Bridge HOST:PORT.")
@click.option(
    "--format",
    "fmt",
    default="xmlrc",
    show_default=True,
    type=click.Choice([f.value for f in DatagramFormat]),
    help="Datagram format.",
)
@click.option("--prefix", default=None, help="Line prefix, as udp://host:port/PREFIX sends.")
@click.option(
    "--secret",
    default=None,
    help="Sign every datagram with this shared secret (the bridge's udp.secret). "
    "Also from $XMLRC_SECRET.",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Read the shared secret from this file (surrounding whitespace ignored).",
)
@click.option("--wiki", help="Wiki ID; with it, the change is built from these options.")
@click.option("--type", "change_type", default="edit", show_default=True)
@click.option("--ns", type=int, default=0, show_default=True)
@click.option("--title")
@click.option("--user", default="")
@click.option("--comment", default="")
@click.option("--rcid", type=int)
@click.option("--revid", type=int)
@click.option("--old-revid", type=int)
@click.option("--oldlen", type=int)
@click.option("--newlen", type=int)
@click.option("--bot", is_flag=True)
@click.option("--minor", is_flag=True)
@click.option("--server-url")
@click.option("--server-script-path", default="/w", show_default=True)
def main(
    target: str,
    fmt: str,
    prefix: str | None,
    secret: str | None,
    secret_file: str | None,
    wiki: str | None,
    change_type: str,
    ns: int,
    title: str | None,
    user: str,
    comment: str,
    rcid: int | None,
    revid: int | None,
    old_revid: int | None,
    oldlen: int | None,
    newlen: int | None,
    bot: bool,
    minor: bool,
    server_url: str | None,
    server_script_path: str,
) -> None:
    """Send recent changes to a udp2xmpp bridge.

    Without --wiki, reads changes from stdin: JSON objects in the
    EventStreams recentchange / MediaWiki JSON feed shape, one a line.
    """
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--target")
    if secret_file is not None:
        if secret is not None:
            raise click.UsageError("give --secret or --secret-file, not both")
        secret = Path(secret_file).read_text(encoding="utf-8").strip()
    elif secret is None:
        secret = os.environ.get(SECRET_ENV)
    if secret is not None and not secret:
        raise click.BadParameter("the secret is empty", param_hint="--secret")
    with Emitter(host.strip("[]"), int(port), fmt=fmt, prefix=prefix, secret=secret) as emitter:
        if wiki is not None:
            if title is None:
                raise click.UsageError("--title is required with --wiki")
            change = RecentChange(
                wiki=wiki,
                type=change_type,
                ns=ns,
                title=title,
                user=user,
                comment=comment,
                timestamp=datetime.now(UTC).replace(microsecond=0),
                rcid=rcid,
                revid=revid,
                old_revid=old_revid,
                oldlen=oldlen,
                newlen=newlen,
                bot=bot,
                minor=minor,
                server_url=server_url,
                server_script_path=server_script_path if server_url else None,
            )
            emitter.send(change)
            return
        sent = 0
        for number, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                change = change_from_json(json.loads(line))
            except (ValueError, DecodeError) as exc:
                click.echo(f"xmlrc-emit: line {number}: {exc}", err=True)
                sys.exit(1)
            emitter.send(change)
            sent += 1
        click.echo(f"sent {sent} changes to {target}", err=True)
