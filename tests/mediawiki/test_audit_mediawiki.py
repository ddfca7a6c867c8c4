"""`rcclient audit` against a real MediaWiki: the room's archive vs the wiki's own record.

One wiki (Debian's MediaWiki 1.39, ``php -S``), its stock ``$wgRCFeeds``
(``JSONRCFeedFormatter`` over UDP) into the real bridge, one room on the
shared Prosody. The real ``rcclient`` console script audits the room:

- after a clean run (page creation, edits, a minor edit, a move, a block):
  the room matches, exit status 0, as JSON and as text (logged in to the
  API, so patrol flags are compared too);
- after the bridge was stopped while three edits were made (their datagrams
  went nowhere) and a new bridge took over for two more: exactly those three
  are missing, nothing is extra, duplicated or different, exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.mediawiki import MediaWikiServer, RCFeed
from harness.prosody import ProsodyServer
from tests.helpers import archived_stable_ids, bridge_config, running_bridge, wait_for
from tests.mediawiki.actions import WikiDriver
from tests.rcclient.util import RCCLIENT
from udp2xmpp.bridge import Bridge


@dataclass
class Audit:
    status: int
    out: str
    err: str

    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.out)
        return parsed


@dataclass
class Run:
    wiki_id: str
    clean_rcids: set[int] = field(default_factory=set)
    lost_rcids: set[int] = field(default_factory=set)
    later_rcids: set[int] = field(default_factory=set)
    audits: dict[str, Audit] = field(default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _second() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def _audit(
    prosody: ProsodyServer, wiki: MediaWikiServer, room: str, *args: str, **env: str
) -> Audit:
    """The real `rcclient audit` as a child process (stopped by us if it hangs)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RCCLIENT_")}
    environ |= {"XDG_CONFIG_HOME": "/nonexistent", **env}
    process = await asyncio.create_subprocess_exec(
        *(RCCLIENT, "audit", room, "--api", wiki.api_url, "--page-delay", "0"),
        *("--jid", prosody.jid("reader"), "--password", "readerpass"),
        *("--host", prosody.host, "--port", str(prosody.c2s_port)),
        *("--ca-file", str(prosody.ca_file), *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Audit(process.returncode, out.decode(), err.decode())


async def _in_archive(prosody: ProsodyServer, room: str, wiki_id: str, rcids: set[int]) -> None:
    """Wait (bounded) until every change of `rcids` is in the room's archive."""
    wanted = {f"{wiki_id}/{rcid}" for rcid in rcids}
    for _attempt in range(150):
        if wanted <= set(await archived_stable_ids(prosody, room)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not archived in {room}: {sorted(wanted)}")


async def _bridge(prosody: ProsodyServer, wiki: MediaWikiServer) -> Bridge:
    """A bridge for the wiki's room, with the wiki's UDP feed pointed at it."""
    config = bridge_config(prosody, rooms={"room": "{wiki}-audit", "wikis": [wiki.wiki_id]})
    bridge = await running_bridge(config)
    await wait_for(lambda: len(bridge.sink.joined_rooms()) == 1, 30, "the bridge's room")
    host, port = bridge.addresses[0]
    wiki.set_rc_feeds({"audit": RCFeed(f"udp://{host}:{port}", "JSONRCFeedFormatter")})
    return bridge


async def _scenario(prosody: ProsodyServer, wiki: MediaWikiServer) -> Run:
    run = Run(wiki.wiki_id)
    room = f"{wiki.wiki_id}-audit@{prosody.muc_domain}"
    bridge: Bridge | None = await _bridge(prosody, wiki)
    # The window starts after the wiki's own setup rows (install.php, accounts).
    start = _second() + timedelta(seconds=1)
    await asyncio.sleep((start - datetime.now(UTC)).total_seconds())
    try:
        async with WikiDriver(wiki) as driver:
            page = "Xmlrc audited page"
            await driver.edit("clean", page, "One.", "create")
            await driver.edit("clean", page, "One, two.", "edit <b>&amp;</b>")
            await driver.edit("clean", page, "One, two!", "typo", minor="1")
            await driver.edit("clean", page, "Bot.", "bot", as_="bot", bot="1")
            await driver.do("clean", {"action": "move", "from": page, "to": f"{page} 2"})
            block = {"action": "block", "user": "192.0.2.9", "expiry": "1 day", "reason": "x"}
            await driver.do("clean", block)
            run.clean_rcids = set(driver.rcids("clean"))
            await _in_archive(prosody, room, wiki.wiki_id, run.clean_rcids)
            clean_end = _second()
            window = ("--since", _iso(start), "--until", _iso(clean_end))
            run.audits["clean json"] = await _audit(prosody, wiki, room, *window, "--json")
            login = ("--api-login", wiki.admin_login[0])
            password = {"RCCLIENT_API_PASSWORD": wiki.admin_login[1]}
            run.audits["clean text"] = await _audit(
                prosody, wiki, room, *window, *login, **password
            )

            # The bridge is stopped: these edits' datagrams go nowhere.
            assert bridge is not None
            await bridge.stop()
            bridge = None
            for n in range(3):
                await driver.edit("lost", page + " 2", f"Lost {n}.", f"lost {n}")
            run.lost_rcids = set(driver.rcids("lost"))
            # A new bridge takes over (a new UDP port, the same room).
            bridge = await _bridge(prosody, wiki)
            for n in range(2):
                await driver.edit("later", page + " 2", f"Later {n}.", f"later {n}")
            run.later_rcids = set(driver.rcids("later"))
            await _in_archive(prosody, room, wiki.wiki_id, run.later_rcids)
        window = ("--since", _iso(start), "--until", _iso(_second()))
        run.audits["lossy json"] = await _audit(prosody, wiki, room, *window, "--json")
        run.audits["lossy text"] = await _audit(prosody, wiki, room, *window)
    finally:
        if bridge is not None:
            await bridge.stop()
    return run


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(prosody: ProsodyServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory: Path = tmp_path_factory.mktemp("mediawiki-audit")
    with MediaWikiServer(directory / "wiki") as wiki:
        async with asyncio.timeout(300):
            return await _scenario(prosody, wiki)


def test_a_clean_run_matches_with_exit_status_0(run: Run) -> None:
    audit = run.audits["clean json"]
    assert (audit.status, audit.err) == (0, ""), audit.out + audit.err
    document = audit.document()
    assert document["match"] is True
    assert len(run.clean_rcids) == 6
    assert document["counts"] == {
        "archived": 6,
        "expected": 6,
        "matched": 6,
        "missing": 0,
        "extra": 0,
        "duplicated": 0,
        "differing": 0,
        "unrecorded": 0,
    }
    assert (document["missing"], document["extra"], document["differing"]) == ([], [], [])
    assert document["wiki"] == run.wiki_id
    assert document["feed"] == "mediawiki"
    # What the UDP feed cannot carry is not compared; what it carries is.
    assert {"pageid", "userid", "tags", "sha1", "parsedcomment"}.isdisjoint(document["fields"])
    assert {"title", "user", "timestamp", "revid", "comment", "logtype"} <= set(document["fields"])
    assert "patrolled" not in document["fields"]  # anonymous: the API gives no patrol flags
    assert document["wiki_api"]["patrol_flags"] is False
    assert document["archive"]["not_from_publisher"] == 0


def test_a_clean_run_in_text_logged_in_compares_patrol_flags_too(run: Run) -> None:
    audit = run.audits["clean text"]
    print(audit.out)  # `pytest -s` shows the report
    assert (audit.status, audit.err) == (0, ""), audit.out + audit.err
    lines = audit.out.splitlines()
    (compared,) = [line for line in lines if line.startswith("compared fields: ")]
    assert "patrolled" in compared.split(": ", 1)[1].split(", ")
    assert "in the wiki's record: 6, in the room: 6, matched: 6" in lines
    assert "missing from the room: 0" in lines
    assert lines[-1] == "result: the room matches the wiki"


def test_the_changes_made_while_the_bridge_was_stopped_are_exactly_the_missing(
    run: Run,
) -> None:
    audit = run.audits["lossy json"]
    assert (audit.status, audit.err) == (1, ""), audit.out + audit.err
    document = audit.document()
    assert document["match"] is False
    assert len(run.lost_rcids) == 3
    assert {m["rcid"] for m in document["missing"]} == run.lost_rcids
    assert [m["id"] for m in document["missing"]] == [
        f"{run.wiki_id}/{rcid}" for rcid in sorted(run.lost_rcids)
    ]
    assert (document["extra"], document["duplicated"], document["differing"]) == ([], [], [])
    everything = len(run.clean_rcids) + len(run.lost_rcids) + len(run.later_rcids)
    assert document["counts"]["expected"] == everything
    assert document["counts"]["matched"] == everything - 3
    assert document["counts"]["archived"] == everything - 3


def test_the_text_report_lists_the_missing_changes(run: Run) -> None:
    audit = run.audits["lossy text"]
    print(audit.out)
    assert (audit.status, audit.err) == (1, ""), audit.out + audit.err
    lines = audit.out.splitlines()
    at = lines.index("missing from the room: 3")
    listed = lines[at + 1 : at + 4]
    assert [line.split()[0] for line in listed] == [
        f"{run.wiki_id}/{rcid}" for rcid in sorted(run.lost_rcids)
    ]
    assert all("edit [[Xmlrc audited page 2]] by Admin" in line for line in listed)
    assert "extra in the room (unknown to the wiki): 0" in lines
    assert lines[-1] == "result: MISMATCH (3 missing)"
