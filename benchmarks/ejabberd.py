"""Bridge throughput against ejabberd 23 (Debian), beside a direct publisher.

    .venv/bin/python -m benchmarks.ejabberd [--events 5000]

The same measurements as ``benchmarks.bridge`` (throughput part), but the
server is a throwaway ejabberd (``harness.ejabberd``) on loopback with
STARTTLS, XEP-0198, no shapers and MUC archiving off.  Compare figures within
one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from benchmarks.bridge import direct_publisher, report, through_bridge
from harness.ejabberd import EjabberdServer
from harness.prosody import ProsodyServer


@contextmanager
def ejabberd_server() -> Iterator[EjabberdServer]:
    server = EjabberdServer()
    try:
        server.start()
        for user, password in (
            ("rcbot", "bridgepass"),
            ("reader", "readerpass"),
            ("direct", "directpass"),
        ):
            server.add_user(user, password)
        yield server
    finally:
        server.cleanup()


async def main(events: int) -> None:
    with ejabberd_server() as ejabberd, tempfile.TemporaryDirectory() as tmp:
        # The benchmark helpers are typed for ProsodyServer; they only use the
        # attributes EjabberdServer has too (host, c2s_port, domain, muc_domain,
        # ca_file, jid).
        server = cast(ProsodyServer, ejabberd)
        workdir = Path(tmp)
        print(
            f"# ejabberd 23.01 (Debian) on loopback, STARTTLS, XEP-0198, no shapers, "
            f"MUC archiving off; {events} events per run"
        )
        baseline = await direct_publisher(server, events)
        print(
            f"baseline, direct slixmpp publisher: {baseline['delivered']:.0f} delivered, "
            f"{baseline['rate']:.0f} events/s at the reader"
        )
        result = await through_bridge(server, workdir, events, None, "throughput (max)")
        shown: dict[str, object] = dict(result)
        report(shown)
        print(f"    ratio to the direct publisher: {result['rate'] / baseline['rate']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    args = parser.parse_args()
    asyncio.run(main(args.events))
