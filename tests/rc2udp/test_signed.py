"""rc2udp signs its datagrams for a bridge that requires signatures."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, running_bridge, wait_for

RC2UDP = Path(sys.executable).parent / "rc2udp"
SAMPLES = Path(__file__).parents[2] / "rc2udp" / "samples" / "sample-changes.jsonl"
SECRET = "a shared secret of enough length"


async def test_replay_signed_and_unsigned(prosody: ProsodyServer, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    config = bridge_config(
        prosody, udp={"secret": SECRET, "require_signature": True},
        rooms={"wikis": ["testwiki", "devwiki"]},
    )  # fmt: skip
    bridge = await running_bridge(config)
    lines = len(SAMPLES.read_text().splitlines())
    host, port = bridge.addresses[0]
    try:
        for extra in (["--secret-file", str(secret_file)], []):
            process = await asyncio.create_subprocess_exec(
                str(RC2UDP), "replay", str(SAMPLES), "--target", f"{host}:{port}",
                "--speed", "max", "--format", "mixed", "--no-progress", *extra,
            )  # fmt: skip
            assert await asyncio.wait_for(process.wait(), 60) == 0
        await wait_for(lambda: bridge.stats.received == 2 * lines, what="both replays")
    finally:
        await bridge.stop()
    assert bridge.stats.accepted == lines
    assert dict(bridge.stats.rejected) == {"unsigned": lines}
