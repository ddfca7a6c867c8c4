"""The real `rcclient` console script, as a subprocess: errors, filters, resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.prosody import ProsodyServer
from rcclient import RCClientError
from rcclient.cli import main
from tests.helpers import reader
from tests.rcclient.util import RCCLIENT, bridge_for, change, published, room_of, send
from xmlrc.wire import change_from_json


def account_args(prosody: ProsodyServer, password: str = "readerpass") -> list[str]:  # noqa: S107
    return [
        *("--jid", prosody.jid("reader"), "--password", password),
        *("--host", prosody.host, "--port", str(prosody.c2s_port)),
        *("--ca-file", str(prosody.ca_file)),
    ]


async def run_cli(
    *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `rcclient ARGS` (without blocking the event loop); (status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RCCLIENT_")}
    environ["XDG_CONFIG_HOME"] = "/nonexistent"  # no user config file
    environ |= env or {}
    process = await asyncio.create_subprocess_exec(
        RCCLIENT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_wrong_password_is_one_line_and_status_1(prosody: ProsodyServer) -> None:
    room = room_of(prosody, "anyroom")
    status, out, err = await run_cli("tail", *account_args(prosody, "wrong"), room)
    assert (status, out) == (1, "")
    assert err == "rcclient: the server refused the password for reader@localhost\n"


async def test_unknown_room_is_one_line_and_is_not_created(prosody: ProsodyServer) -> None:
    room = room_of(prosody, "no-such-room-cli")
    status, out, err = await run_cli("tail", *account_args(prosody), room)
    assert (status, out) == (1, "")
    assert err == f"rcclient: no such room: {room}\n"
    with pytest.raises(RCClientError, match="no such room"):  # still not there
        await reader(prosody, [room]).connect()


async def test_unreachable_server_is_one_line_and_status_1(prosody: ProsodyServer) -> None:
    port = free_port()  # nothing listens there
    args = ["--jid", "reader@localhost", "--password", "x", "--host", "127.0.0.1"]
    status, out, err = await run_cli("tail", *args, "--port", str(port), "r@conference.localhost")
    assert (status, out) == (1, "")
    assert err.startswith(f"rcclient: cannot connect to 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


async def test_every_server_given_is_tried_before_giving_up(prosody: ProsodyServer) -> None:
    first, second = free_port(), free_port()
    args = ["--jid", "reader@localhost", "--password", "x", "--host", "127.0.0.1"]
    status, out, err = await run_cli(
        "tail",
        *args,
        "--port",
        str(first),
        "--server",
        f"127.0.0.1:{second}",
        "r@conference.localhost",
    )
    assert (status, out) == (1, "")
    tried, failed = err.splitlines()
    assert tried.startswith(f"rcclient: cannot connect to 127.0.0.1:{first}: ")
    assert tried.endswith(f"; trying 127.0.0.1:{second}")
    assert failed.startswith(f"rcclient: cannot connect to 127.0.0.1:{second}: ")


@pytest.mark.parametrize(
    ("args", "status", "start"),
    [
        ([], 2, "rcclient: no account: give --jid, set RCCLIENT_JID or add jid to "),
        (["--jid", "a@localhost"], 2, "rcclient: no password for a@localhost: give --password"),
        (["--jid", "a@localhost", "--password", "p", "--since", "soon"], 2, "rcclient: --since"),
        (["--jid", "a@l", "--password", "p", "--title-regex", "("], 2, "rcclient: title_regex: "),
        (["--jid", "a@l", "--password", "p", "--ca-file", "/nonexistent.pem"], 2, "rcclient: CA"),
        (["--jid", "a@l", "--password", "p", "--resume", "{bad}"], 1, "rcclient: state file"),
        (["--jid", "a@l", "--password", "p", "--server", "nowhere"], 2, "rcclient: --server: "),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], status: int, start: str
) -> None:
    for name in ("RCCLIENT_JID", "RCCLIENT_PASSWORD", "RCCLIENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    bad_state = tmp_path / "state.json"
    bad_state.write_text("[]")
    args = [arg.replace("{bad}", str(bad_state)) for arg in args]
    result = CliRunner().invoke(main, ["tail", *args, "r@conference.localhost"])
    assert (result.exit_code, result.stdout) == (status, "")
    assert result.stderr.startswith(start)
    assert result.stderr.count("\n") == 1


async def test_account_from_a_config_file_and_filters_as_options(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wiki = "clifilterwiki"
    room = room_of(prosody, wiki)
    config = tmp_path / "rcclient.toml"
    config.write_text(
        f'[account]\njid = "{prosody.jid("reader")}"\npassword = "readerpass"\n'
        f'host = "{prosody.host}"\nport = {prosody.c2s_port}\nca_file = "{prosody.ca_file}"\n'
    )
    stream = [
        change(wiki, 1),  # +1 byte
        change(wiki, 2, bot=True, newlen=1500),
        change(wiki, 3, ns=1, newlen=1500),
        change(wiki, 4, newlen=1600),
        change(wiki, 5, type="log", revid=None, old_revid=None, oldlen=None, newlen=None),
        change(wiki, 6, newlen=1004, title="Sandbox"),
        change(wiki, 7, newlen=1300, user="Bob"),
    ]
    async with bridge_for(prosody, wiki) as bridge:
        send(bridge, stream)
        await published(bridge, len(stream))
        args = ["--config", str(config), "--since", "1h", "--type", "edit", "--ns", "0"]
        args += ["--no-bots", "--min-change", "3", "--user", "Alice", "--json", "--count", "2"]
        status, out, err = await run_cli("tail", *args, room)
        assert (status, err) == (0, f"# joined {room}\n")
        printed = [change_from_json(json.loads(line)) for line in out.splitlines()]
        assert printed == [stream[3], stream[5]]
        args = ["--config", str(config), "--since", "1h", "--title-regex", "^Sand", "--count", "1"]
        status, out, err = await run_cli("tail", *args, room)
        assert status == 0 and err == f"# joined {room}\n"
        url = "http://127.0.0.1:8080/w/index.php?diff=10006&oldid=10005&rcid=6"
        assert out == f"[{wiki}] [[Sandbox]]  {url} * Alice * (+4) edit number 6\n"


async def test_resume_after_the_program_is_restarted(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wiki = "cliresumewiki"
    room = room_of(prosody, wiki)
    state = tmp_path / "state.json"
    args = [*account_args(prosody), "--json", "--resume", str(state), "--since", "1h"]
    async with bridge_for(prosody, wiki) as bridge:
        send(bridge, [change(wiki, n) for n in range(1, 6)])
        await published(bridge, 5)
        # First run: stopped with SIGTERM, as a service manager does.
        process = await asyncio.create_subprocess_exec(
            RCCLIENT, "tail", *args, room,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        try:
            joined = await asyncio.wait_for(process.stderr.readline(), 30)
            assert joined.decode() == f"# joined {room}\n"
            send(bridge, [change(wiki, n) for n in range(6, 9)])  # and some live
            first = []
            for _ in range(8):
                line = await asyncio.wait_for(process.stdout.readline(), 30)
                first.append(json.loads(line)["id"])
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        send(bridge, [change(wiki, n) for n in range(9, 13)])  # while it is not running
        await published(bridge, 12)
        status, out, err = await run_cli("tail", *args, "--count", "4", room)
        assert (status, err) == (0, f"# joined {room}\n")
        second = [json.loads(line)["id"] for line in out.splitlines()]
    assert first == [1, 2, 3, 4, 5, 6, 7, 8]
    assert second == [9, 10, 11, 12]  # where the first run stopped: none twice, none lost
    saved = json.loads(state.read_text())
    assert saved["rooms"][room]["recent"][-1] == f"{wiki}/12"


async def test_tail_trusts_only_the_publisher_and_names_the_room(prosody: ProsodyServer) -> None:
    from tests.rcclient.rooms import MODERATED, UNMODERATED, occupant, payload

    wiki = "clitrustwiki"
    real, forged = room_of(prosody, "cli-trust-real"), room_of(prosody, "cli-trust-forged")
    async with (
        occupant(prosody, "rcbot", real, "rcbot", config=MODERATED) as publisher,
        occupant(prosody, "intruder", forged, "intruder", config=UNMODERATED) as forger,
    ):
        await forger.post(*(payload(change(wiki, n, title="FORGED")) for n in (1, 2)))
        await publisher.post(*(payload(change(wiki, n)) for n in (1, 2)))
        base = ["tail", *account_args(prosody), "--json", "--since", "1h", "--count", "2"]

        status, out, err = await run_cli(*base, forged, real)  # refused by default
        assert (status, out) == (1, "")
        assert err.startswith(f"rcclient: {forged} is not moderated: ")
        assert err.count("\n") == 1

        status, out, err = await run_cli(*base, "--allow-unmoderated", forged, real)
        assert status == 0
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(x["room"], x["id"], x["title"]) for x in lines] == [
            (real, 1, "Page 1"),
            (real, 2, "Page 2"),
        ]
        assert change_from_json(lines[0]) == change(wiki, 1)  # "room" is an extra key
        assert f"{forged} is NOT moderated" in err
        assert f"dropped a change in {forged}: sent by 'intruder', not by the publisher" in err

        # Whoever is named the publisher is the one believed.
        args = [*base, "--allow-unmoderated", "--publisher", "intruder", forged]
        status, out, err = await run_cli(*args)
        assert status == 0
        assert [(json.loads(x)["room"], json.loads(x)["title"]) for x in out.splitlines()] == [
            (forged, "FORGED"),
            (forged, "FORGED"),
        ]


async def test_tail_publisher_jid_is_repeatable_for_a_bridge_pair(prosody: ProsodyServer) -> None:
    from tests.rcclient.rooms import NON_ANONYMOUS, PASSWORDS, occupant, payload

    # Each bridge of a pair publishes under the same nick, from its own account; the
    # rooms show real JIDs. Both flags reach the client: with either alone, one of
    # the two changes would be refused and --count 2 never reached.
    prosody.add_user("rcbot2", PASSWORDS["rcbot2"])
    wiki = "clipairwiki"
    one, two = room_of(prosody, "cli-pair-one"), room_of(prosody, "cli-pair-two")
    async with (
        occupant(prosody, "rcbot", one, "rcbot", config=NON_ANONYMOUS) as first,
        occupant(prosody, "rcbot2", two, "rcbot", config=NON_ANONYMOUS) as second,
    ):
        await first.post(payload(change(wiki, 1)))
        await second.post(payload(change(wiki, 2)))
        args = ["tail", *account_args(prosody), "--json", "--since", "1h", "--count", "2"]
        jids = ["--publisher-jid", prosody.jid("rcbot"), "--publisher-jid", prosody.jid("rcbot2")]
        status, out, err = await run_cli(*args, *jids, one, two, timeout=30)
    assert status == 0, err
    assert sorted((json.loads(x)["room"], json.loads(x)["id"]) for x in out.splitlines()) == [
        (one, 1),
        (two, 2),
    ]
    assert "dropped" not in err
