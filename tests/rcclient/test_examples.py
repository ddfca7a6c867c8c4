"""The examples, run as the scripts they are, against real Prosody and the bridge."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path

from harness.prosody import ProsodyServer
from tests.rcclient.util import bridge_for, change, published, room_bodies, room_of, send

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_example(name: str, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RCCLIENT_")}
    environ["XDG_CONFIG_HOME"] = "/nonexistent"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
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


def account(prosody: ProsodyServer) -> list[str]:
    return [
        *("--jid", prosody.jid("reader"), "--password", "readerpass"),
        *("--host", prosody.host, "--port", str(prosody.c2s_port)),
        *("--ca-file", str(prosody.ca_file)),
    ]


async def test_large_removals_bot_reports_in_its_own_room(prosody: ProsodyServer) -> None:
    wiki = "botwiki"
    report_room = room_of(prosody, "removals-report")
    async with bridge_for(prosody, wiki) as bridge:
        send(
            bridge,
            [
                change(wiki, 1, oldlen=900, newlen=800),  # -100: small
                change(wiki, 2, oldlen=9000, newlen=10, comment="blanked"),  # -8990
                change(wiki, 3, type="new", old_revid=None, oldlen=None, newlen=5),
            ],
        )
        await published(bridge, 3)
        status, out, err = await run_example(
            "large_removals_bot.py",
            *account(prosody),
            *("--report-room", report_room, "--since", "1h", "--count", "1"),
            room_of(prosody, wiki),
        )
        assert (status, err) == (0, "")
        assert "reported [[Page 2]] on botwiki" in out
    assert await room_bodies(prosody, report_room) == [
        'Large removal on botwiki: [[Page 2]] -8990 bytes by Alice ("blanked") '
        "http://127.0.0.1:8080/w/index.php?diff=10002&oldid=10001"
    ]


async def test_recorder_writes_csv_and_resumes_after_a_restart(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    wiki = "recorderwiki"
    room = room_of(prosody, wiki)
    out = tmp_path / "changes.csv"
    args = [*account(prosody), "--out", str(out), "--since", "1h", room]
    async with bridge_for(prosody, wiki) as bridge:
        send(bridge, [change(wiki, n) for n in range(1, 5)])
        await published(bridge, 4)
        status, _out, err = await run_example("recorder.py", *args, "--count", "3")
        assert status == 0, err
        send(bridge, [change(wiki, n) for n in range(5, 8)])
        await published(bridge, 7)
        status, _out, err = await run_example("recorder.py", *args, "--count", "4")
        assert status == 0, err
        # A crash right after writing: the state saved a second ago lags behind the file.
        rows = read_rows(out)
        state_path = tmp_path / "changes.csv.state.json"
        state = json.loads(state_path.read_text())
        state["rooms"][room] |= {"archive_id": rows[4]["archive_id"], "recent": []}
        state_path.write_text(json.dumps(state))
        send(bridge, [change(wiki, 8)])
        await published(bridge, 8)
        status, _out, err = await run_example("recorder.py", *args, "--count", "1")
        assert status == 0, err
    rows = read_rows(out)
    assert [row["stable_id"] for row in rows] == [f"{wiki}/{n}" for n in range(1, 9)]
    assert rows[0]["timestamp"] == "2026-03-01T12:00:01Z" and rows[0]["size_change"] == "1"
    assert not (tmp_path / "changes.csv.gaps.jsonl").exists()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


async def test_activity_summary_counts_per_wiki_and_type(prosody: ProsodyServer) -> None:
    wikis = ("summarywiki", "summarywiki2")
    async with bridge_for(prosody, *wikis) as bridge:
        send(
            bridge,
            [
                change(wikis[0], 1),
                change(wikis[0], 2, type="new", old_revid=None, oldlen=None, newlen=40),
                change(wikis[1], 3, oldlen=100, newlen=60),
            ],
        )
        await published(bridge, 3)
        status, out, err = await run_example(
            "activity_summary.py",
            *account(prosody),
            *("--since", "1h", "--interval", "1", "--rounds", "1"),
            *(room_of(prosody, wiki) for wiki in wikis),
        )
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["wiki", "total", "last"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    # total, last interval, edit, new, log, categorize, other, +bytes, -bytes
    assert rows["summarywiki"] == ["2", "2", "1", "1", "0", "0", "0", "41", "0"]
    assert rows["summarywiki2"] == ["1", "1", "1", "0", "0", "0", "0", "0", "40"]
