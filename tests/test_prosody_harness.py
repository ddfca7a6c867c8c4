"""The throwaway Prosody harness works as the other tests rely on.

Real slixmpp clients and components log in to a real Prosody; every wait is
bounded so a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID, ClientXMPP, ComponentXMPP

from harness.prosody import ProsodyServer

STEP_TIMEOUT = 15.0


@dataclass
class Attempt:
    """How one connection attempt ended."""

    outcome: str  # an event name, or "timeout"
    peer_certs: list[str] = field(default_factory=list)


CLIENT_OUTCOMES = ("session_start", "failed_auth", "ssl_invalid_chain")


def _first_of(client: Any, events: tuple[str, ...]) -> asyncio.Future[str]:
    """A future set to the name of whichever of ``events`` ``client`` fires first."""
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def settle(name: str) -> Callable[[Any], None]:
        def handler(_event: Any) -> None:
            if not first.done():
                first.set_result(name)

        return handler

    for name in events:
        client.add_event_handler(name, settle(name))
    return first


def _client(server: ProsodyServer, user: str, password: str, ca_file: Path | None) -> Any:
    """A ClientXMPP for ``user`` that uses STARTTLS verified against ``ca_file``."""
    client = ClientXMPP(server.jid(user), password)
    client.ca_certs = ca_file or server.ca_file
    client.enable_direct_tls = False
    client.enable_starttls = True
    return client


async def _close(client: Any) -> None:
    client.cancel_connection_attempt()
    try:
        await asyncio.wait_for(client.disconnect(wait=1.0), 5)
    except (TimeoutError, OSError):
        client.abort()


async def _attempt(
    client: Any, server: ProsodyServer, port: int, events: tuple[str, ...], give_up_after: float
) -> Attempt:
    """Connect ``client`` and wait for the first of ``events`` (or time out)."""
    attempt = Attempt(outcome="timeout")
    first = _first_of(client, events)
    client.add_event_handler("ssl_cert", attempt.peer_certs.append)
    client.connect(server.host, port)
    try:
        attempt.outcome = await asyncio.wait_for(first, give_up_after)
    except TimeoutError:
        pass
    finally:
        await _close(client)
    return attempt


async def login(
    server: ProsodyServer,
    user: str,
    password: str,
    *,
    ca_file: Path | None = None,
    give_up_after: float = STEP_TIMEOUT,
) -> Attempt:
    """Try to log ``user`` in on the c2s port and report how it ended."""
    client = _client(server, user, password, ca_file)
    return await _attempt(client, server, server.c2s_port, CLIENT_OUTCOMES, give_up_after)


@contextlib.asynccontextmanager
async def session(
    server: ProsodyServer, user: str, password: str, *plugins: str
) -> AsyncIterator[Any]:
    """A logged-in client with ``plugins`` registered, disconnected on exit."""
    client = _client(server, user, password, None)
    for plugin in plugins:
        client.register_plugin(plugin)
    first = _first_of(client, CLIENT_OUTCOMES)
    client.connect(server.host, server.c2s_port)
    try:
        assert await asyncio.wait_for(first, STEP_TIMEOUT) == "session_start"
        yield client
    finally:
        await _close(client)


def _der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def _accepts(server: ProsodyServer, port: int) -> bool:
    try:
        with socket.create_connection((server.host, port), timeout=1):
            return True
    except OSError:
        return False


async def test_client_logs_in_over_starttls_verified_with_ca_file(
    prosody: ProsodyServer, xmpp_accounts: dict[str, str]
) -> None:
    attempt = await login(prosody, "reader", xmpp_accounts["reader"])
    assert attempt.outcome == "session_start"
    # TLS really was negotiated, with the certificate the harness wrote.
    assert [_der(pem) for pem in attempt.peer_certs] == [_der(prosody.ca_file.read_text())]


async def test_certificate_from_another_ca_is_rejected(
    prosody: ProsodyServer, xmpp_accounts: dict[str, str], tmp_path: Path
) -> None:
    other_ca = ProsodyServer(tmp_path / "other").ca_file  # made, never started
    attempt = await login(prosody, "reader", xmpp_accounts["reader"], ca_file=other_ca)
    assert attempt.outcome == "ssl_invalid_chain"


async def test_wrong_password_fails_auth(prosody: ProsodyServer) -> None:
    attempt = await login(prosody, "intruder", "not-the-password")
    assert attempt.outcome == "failed_auth"


async def test_external_component_handshake(prosody: ProsodyServer) -> None:
    events = ("session_start", "stream_error", "disconnected")
    good = ComponentXMPP(prosody.component_domain, prosody.component_secret)
    attempt = await _attempt(good, prosody, prosody.component_port, events, STEP_TIMEOUT)
    assert attempt.outcome == "session_start"

    bad = ComponentXMPP(prosody.component_domain, "wrong-secret")
    attempt = await _attempt(bad, prosody, prosody.component_port, events, STEP_TIMEOUT)
    assert attempt.outcome in ("stream_error", "disconnected")


async def test_restart_keeps_ports_and_accounts(
    fresh_prosody: ProsodyServer, xmpp_accounts: dict[str, str]
) -> None:
    server = fresh_prosody
    server.add_user("latecomer", "latepass")  # registered while running
    assert (await login(server, "latecomer", "latepass")).outcome == "session_start"
    ports = (server.c2s_port, server.component_port)
    old_pid = server.pid

    server.restart()

    assert server.running
    assert server.pid != old_pid
    assert (server.c2s_port, server.component_port) == ports
    assert (await login(server, "rcbot", xmpp_accounts["rcbot"])).outcome == "session_start"
    assert (await login(server, "latecomer", "latepass")).outcome == "session_start"
    assert (await login(server, "latecomer", "wrong")).outcome == "failed_auth"


def test_stop_ends_the_process(fresh_prosody: ProsodyServer) -> None:
    server = fresh_prosody
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not server.running
    assert server.pid is None
    assert server.returncode == 0  # a clean SIGTERM shutdown, not a SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not _accepts(server, server.c2s_port)
    server.stop()  # stopping a stopped server is a no-op


async def test_kill_then_start_again(
    fresh_prosody: ProsodyServer, xmpp_accounts: dict[str, str]
) -> None:
    server = fresh_prosody
    pid = server.pid
    assert pid is not None
    server.kill()
    assert server.returncode == -9
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.start()  # a stale pidfile left by SIGKILL does not stop it
    assert (await login(server, "reader", xmpp_accounts["reader"])).outcome == "session_start"


async def test_freeze_and_thaw(fresh_prosody: ProsodyServer, xmpp_accounts: dict[str, str]) -> None:
    server = fresh_prosody
    server.freeze()
    try:
        # The kernel still accepts the TCP connection, but nobody answers.
        frozen = await login(server, "reader", xmpp_accounts["reader"], give_up_after=2.0)
        assert frozen.outcome == "timeout"
    finally:
        server.thaw()
    thawed = await login(server, "reader", xmpp_accounts["reader"])
    assert thawed.outcome == "session_start"


def test_stop_works_on_a_frozen_server(fresh_prosody: ProsodyServer) -> None:
    server = fresh_prosody
    server.freeze()
    server.stop()
    assert not server.running
    assert server.returncode == 0


@pytest.mark.parametrize(("storage", "kept"), [("sql", True), ("memory", False)])
async def test_muc_history_across_restart_depends_on_storage(
    prosody_factory: Callable[..., ProsodyServer],
    xmpp_accounts: dict[str, str],
    storage: str,
    kept: bool,
) -> None:
    server = prosody_factory(muc_log_storage=storage)
    room = JID(server.room_jid("history"))
    body = f"stored in {storage}"
    async with session(server, "rcbot", xmpp_accounts["rcbot"], "xep_0045") as bot:
        await bot.plugin["xep_0045"].join_muc_wait(room, "bot", maxstanzas=0, timeout=STEP_TIMEOUT)
        echoed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_groupchat(message: Any) -> None:
            if message["body"] == body and not echoed.done():
                echoed.set_result(None)

        bot.add_event_handler("groupchat_message", on_groupchat)
        bot.send_message(mto=room, mbody=body, mtype="groupchat")
        await asyncio.wait_for(echoed, STEP_TIMEOUT)

    server.restart()

    assert server.sqlite_file.exists() == (storage == "sql")
    async with session(server, "reader", xmpp_accounts["reader"], "xep_0045") as reader:
        joined = await reader.plugin["xep_0045"].join_muc_wait(
            room, "reader", maxstanzas=20, timeout=STEP_TIMEOUT
        )
    history = [message["body"] for message in joined[3]]
    assert (body in history) == kept, history


def test_missing_prosody_is_an_error_not_a_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="prosody is not installed"):
        ProsodyServer(tmp_path / "never")
    assert not (tmp_path / "never").exists()
