"""`rcclient audit`'s errors: one line on stderr, exit status 2 (1 is "the room differs")."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from click.testing import CliRunner

from harness.prosody import ProsodyServer
from rcclient.cli import main
from tests.rcclient.util import RCCLIENT, room_of

ROOM = "testwiki@conference.localhost"
LOOPBACK_API = "http://127.0.0.1:9/api.php"  # never asked: the options are refused first
ACCOUNT = ["--jid", "reader@localhost", "--password", "x"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not a jid", "--since", "1h"], "not a room JID (room@service): 'not a jid'"),
        ([ROOM, "--since", "yesterday"], "--since: expected a duration"),
        ([ROOM, "--since", "1h", "--until", "2h"], "--until is before --since"),
        ([ROOM, "--since", "1h", "--margin", "2026-01-01"], "--margin: expected a duration"),
        ([ROOM, "--since", "1h", "--fields", "titel"], "--fields: no such field: 'titel'"),
        ([ROOM, "--since", "1h", "--fields", "title,-user"], "--fields: either names"),
        ([ROOM, "--since", "1h", "--page-delay", "-1"], "--page-delay: expected a number >= 0"),
        ([ROOM, "--since", "1h", "--api-login", "Bot@x"], "--api-login: give --api-password-file"),
    ],
)
def test_bad_options_are_one_line_and_status_2(args: list[str], message: str) -> None:
    env = {"XDG_CONFIG_HOME": "/nonexistent", "RCCLIENT_API_PASSWORD": ""}
    result = CliRunner().invoke(main, ["audit", *args, "--api", LOOPBACK_API, *ACCOUNT], env=env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("rcclient: " + message)
    assert result.output.count("\n") == 1


def test_a_wiki_off_loopback_needs_a_contact_for_its_user_agent() -> None:
    args = ["audit", ROOM, "--since", "1h", "--api", "https://wiki.example.org/w/api.php"]
    result = CliRunner().invoke(main, [*args, *ACCOUNT], env={"XDG_CONFIG_HOME": "/nonexistent"})
    assert result.exit_code == 2
    assert result.output.startswith("rcclient: --contact EMAIL_OR_URL (or --user-agent)")


def test_no_account_is_status_2() -> None:
    args = ["audit", ROOM, "--since", "1h", "--api", LOOPBACK_API]
    env = {"XDG_CONFIG_HOME": "/nonexistent", "RCCLIENT_JID": "", "RCCLIENT_PASSWORD": ""}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2
    assert result.output.startswith("rcclient: no account: give --jid")


async def run_audit(*args: str) -> tuple[int, str, str]:
    """The real console script, as a subprocess; (status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RCCLIENT_")}
    environ["XDG_CONFIG_HOME"] = "/nonexistent"
    process = await asyncio.create_subprocess_exec(
        RCCLIENT,
        "audit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def account(prosody: ProsodyServer, password: str = "readerpass") -> list[str]:  # noqa: S107
    return [
        *("--jid", prosody.jid("reader"), "--password", password),
        *("--host", prosody.host, "--port", str(prosody.c2s_port)),
        *("--ca-file", str(prosody.ca_file)),
    ]


async def test_unreachable_server_is_one_line_and_status_2() -> None:
    port = free_port()  # nothing listens there
    status, out, err = await run_audit(
        ROOM, "--since", "1h", "--api", LOOPBACK_API,
        *ACCOUNT, "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    assert (status, out) == (2, "")
    assert err.startswith(f"rcclient: cannot connect to 127.0.0.1:{port}")
    assert err.count("\n") == 1


async def test_wrong_password_is_one_line_and_status_2(prosody: ProsodyServer) -> None:
    room = room_of(prosody, "anyroom")
    args = [room, "--since", "1h", "--api", LOOPBACK_API, *account(prosody, "wrong")]
    status, out, err = await run_audit(*args)
    assert (status, out) == (2, "")
    assert err == "rcclient: the server refused the password for reader@localhost\n"


async def test_unknown_room_is_one_line_and_status_2(prosody: ProsodyServer) -> None:
    room = room_of(prosody, "no-such-room-audit")
    status, out, err = await run_audit(
        room, "--since", "1h", "--api", LOOPBACK_API, *account(prosody)
    )
    assert (status, out) == (2, "")
    assert err == f"rcclient: no such room: {room}\n"
