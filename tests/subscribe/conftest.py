"""Servers of the watch and PubSub tests.

The watch tests use the session's shared Prosody (``prosody``), with two more
accounts; the PubSub tests share one Prosody of this package with a PubSub
service whose admin is the bridge's account (Prosody lets only admins create
nodes), its nodes and items kept in SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.prosody import ProsodyServer

PEOPLE = {"alice": "alicepass", "bob": "bobpass"}


@pytest.fixture(scope="package")
def people(prosody: ProsodyServer) -> ProsodyServer:
    """The session's Prosody, with the accounts alice and bob too."""
    for user, password in PEOPLE.items():
        prosody.add_user(user, password)
    return prosody


@pytest.fixture(scope="package")
def pubsub_prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    directory: Path = tmp_path_factory.mktemp("prosody-pubsub")
    server = ProsodyServer(directory, pubsub=True, pubsub_admins=("rcbot@localhost",))
    for user, password in {"rcbot": "bridgepass", "reader": "readerpass", **PEOPLE}.items():
        server.add_user(user, password)
    server.add_user("intruder", "intruderpass")
    server.start()
    try:
        yield server
    finally:
        server.stop()
