"""Shared fixtures: throwaway Prosody servers on loopback.

``prosody`` is one server for the whole session; tests that kill, restart or
freeze a server use ``fresh_prosody`` (or ``prosody_factory`` for custom
options) so they never disturb the shared one.  Every server started here is
stopped at teardown.  When the ``prosody`` binary is missing the fixtures
raise, so the tests fail (they are never skipped).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from harness.prosody import ProsodyServer

# The machines are small and shared: no per-example deadline, no "generation is
# slow" failures. CI runs the same examples every time (derandomized), so a
# failure there is reproducible; developers' runs keep exploring.
settings.register_profile(
    "xmlrc",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("xmlrc")

#: Accounts on ``localhost`` that every fixture server has (user -> password).
XMPP_ACCOUNTS: dict[str, str] = {
    "rcbot": "bridgepass",
    "reader": "readerpass",
    "intruder": "intruderpass",
}


def _started_server(directory: Path, **options: Any) -> ProsodyServer:
    server = ProsodyServer(directory, **options)
    for user, password in XMPP_ACCOUNTS.items():
        server.add_user(user, password)
    server.start()
    return server


@pytest.fixture(scope="session")
def xmpp_accounts() -> dict[str, str]:
    """The accounts (user -> password) registered on every fixture server."""
    return dict(XMPP_ACCOUNTS)


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    """One running Prosody shared by the session; do not stop or freeze it."""
    server = _started_server(tmp_path_factory.mktemp("prosody"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_prosody(tmp_path: Path) -> Iterator[ProsodyServer]:
    """A running Prosody of this test's own, free to kill, restart or freeze."""
    server = _started_server(tmp_path / "prosody")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prosody_factory(tmp_path: Path) -> Iterator[Callable[..., ProsodyServer]]:
    """Start servers with custom options, e.g. ``prosody_factory(muc_log_storage="sql")``.

    Keyword arguments go to :class:`ProsodyServer`; each server has the usual
    accounts, is started, and is stopped when the test ends.
    """
    servers: list[ProsodyServer] = []

    def make(**options: Any) -> ProsodyServer:
        server = _started_server(tmp_path / f"prosody-{len(servers)}", **options)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


# -- MediaWiki (appended for the rc2udp and MediaWiki tests) -----------------------------

from harness.mediawiki import MediaWikiServer  # noqa: E402


@pytest.fixture
def mediawiki_factory(tmp_path: Path) -> Iterator[Callable[..., MediaWikiServer]]:
    """Start fresh throwaway MediaWikis, e.g. ``mediawiki_factory(wiki_id="devwiki")``.

    Keyword arguments go to :class:`MediaWikiServer`; each wiki is set up
    (about 2 s; the Debian packages are installed first if missing, as root)
    and started, and stopped when the test ends.  If MediaWiki cannot be
    installed or started the test fails, it is never skipped.
    """
    wikis: list[MediaWikiServer] = []

    def make(**options: Any) -> MediaWikiServer:
        wiki = MediaWikiServer(tmp_path / f"mediawiki-{len(wikis)}", **options)
        wikis.append(wiki)
        wiki.start()
        return wiki

    try:
        yield make
    finally:
        for wiki in wikis:
            wiki.stop()


@pytest.fixture
def mediawiki(mediawiki_factory: Callable[..., MediaWikiServer]) -> MediaWikiServer:
    """A running MediaWiki of this test's own (wiki ID ``testwiki``)."""
    return mediawiki_factory()
