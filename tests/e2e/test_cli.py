"""The programs as an operator runs them: udp2xmpp, rcclient tail, rc2udp replay."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from harness.prosody import ProsodyServer
from tests.fixtures import JSON_FEED_PORT, packets
from tests.helpers import bridge_toml, reader, wait_for
from xmlrc.wire import RecentChange, change_from_json, decode_datagram
from xmlrc_emitter import Emitter

BIN = Path(sys.executable).parent
SAMPLES = Path(__file__).parents[2] / "rc2udp" / "samples" / "sample-changes.jsonl"


def write_config(path: Path, prosody: ProsodyServer, udp_port: int, wikis: list[str]) -> Path:
    path.write_text(bridge_toml(prosody, udp_port, f"wikis = {json.dumps(wikis)}\n"))
    return path


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_prints_the_effective_config(tmp_path: Path, prosody: ProsodyServer) -> None:
    config = write_config(tmp_path / "bridge.toml", prosody, 9999, ["a"])
    result = subprocess.run(
        [str(BIN / "udp2xmpp"), "check", "--config", str(config)], capture_output=True,
        text=True, timeout=30, env={"TEST_BRIDGE_PASSWORD": "secret"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and 'password = "***"' in result.stdout
    assert '"secret"' not in result.stdout  # the password's value (a TOML string) is hidden


def test_invalid_config_stops_startup_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[xmpp]\njid = "rcbot@localhost"\npassword = "x"\nport = "many"\n')
    result = subprocess.run(
        [str(BIN / "udp2xmpp"), "--config", str(config)], capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "udp2xmpp: invalid config: xmpp.port: must be an integer, got 'many'"
    )


async def test_bridge_and_tail_as_processes_then_sigterm_drains(
    tmp_path: Path, prosody: ProsodyServer
) -> None:
    udp_port = free_udp_port()
    config = write_config(tmp_path / "bridge.toml", prosody, udp_port, ["cliwiki"])
    room = f"cliwiki@{prosody.muc_domain}"
    bridge_log = tmp_path / "bridge.log"
    with bridge_log.open("wb") as log:
        bridge = await asyncio.create_subprocess_exec(
            str(BIN / "udp2xmpp"), "--config", str(config), stdout=log, stderr=log,
            env={"TEST_BRIDGE_PASSWORD": "bridgepass"},
        )  # fmt: skip
    tail = None
    try:
        await wait_for(lambda: f"joined {room}" in bridge_log.read_text(), 30, "the bridge")
        tail = await asyncio.create_subprocess_exec(
            str(BIN / "rcclient"), "tail", "--jid", prosody.jid("reader"), "--password",
            "readerpass", "--host", prosody.host, "--port", str(prosody.c2s_port), "--ca-file",
            str(prosody.ca_file), "--json", "--count", "3", room,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stderr is not None
        joined = await asyncio.wait_for(tail.stderr.readline(), 30)
        assert joined.decode().startswith("# joined")
        sent = [
            p.replace(b'"wiki":"testwiki"', b'"wiki":"cliwiki"')
            for p in packets(JSON_FEED_PORT)[:3]
        ]
        with Emitter("127.0.0.1", udp_port) as emitter:
            for data in sent:
                emitter.send_raw(data)
        out, _ = await asyncio.wait_for(tail.communicate(), 30)
        assert tail.returncode == 0
        printed = [change_from_json(json.loads(line)) for line in out.decode().splitlines()]
        assert printed == [decode_datagram(data) for data in sent]
        first = json.loads(out.decode().splitlines()[0])
        assert first["meta"]["domain"] == "127.0.0.1" and first["length"] == {
            "old": None, "new": 11,
        }  # fmt: skip

        # SIGTERM while changes are queued: the bridge delivers them, leaves, exits 0.
        async with reader(prosody, [room]) as client:
            with Emitter("127.0.0.1", udp_port) as emitter:
                for rcid in range(1000, 1050):
                    change = decode_datagram(sent[0])
                    assert isinstance(change, RecentChange)
                    emitter.send(change.with_changes(rcid=rcid))
            await asyncio.sleep(0.2)
            bridge.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bridge.wait(), 30) == 0
            got: list[int] = []

            async def read() -> None:
                async for change in client.changes():
                    got.append(change.rcid or 0)

            task = asyncio.create_task(read())
            try:
                await wait_for(lambda: len(got) >= 50, 20, "the drained changes")
            finally:
                task.cancel()
        assert sorted(got) == list(range(1000, 1050))
        assert "stopped" in bridge_log.read_text()
    finally:
        for process in (tail, bridge):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()


def test_rc2udp_replay_sends_the_samples() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        host, port = sock.getsockname()
        result = subprocess.run(
            [str(BIN / "rc2udp"), "replay", str(SAMPLES), "--target", f"{host}:{port}",
             "--speed", "max", "--format", "mixed"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = SAMPLES.read_text().splitlines()
        got = [decode_datagram(sock.recvfrom(65535)[0]) for _ in lines]
    expected = [change_from_json(json.loads(line)) for line in lines]
    assert [c.stable_id for c in got if isinstance(c, RecentChange)] == [
        c.stable_id for c in expected
    ]
