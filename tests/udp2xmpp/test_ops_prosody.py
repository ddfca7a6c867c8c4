"""Operations against real Prosody: /metrics after traffic, /healthz up and down,
JSON logs from the real ``udp2xmpp`` process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from harness.prosody import ProsodyServer
from tests.helpers import bridge_config, collect, reader, running_bridge, wait_for
from xmlrc.wire import RecentChange, encode_datagram
from xmlrc_emitter import Emitter

BIN = Path(sys.executable).parent


def change(wiki: str, rcid: int, age: int = 0) -> RecentChange:
    stamp = datetime.fromtimestamp(int(time.time()) - age, UTC)
    return RecentChange(
        wiki=wiki, type="edit", ns=0, title=f"Page {rcid}", user="Ops", timestamp=stamp, rcid=rcid
    )


async def get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


async def test_metrics_and_healthz_after_traffic(prosody: ProsodyServer) -> None:
    config = bridge_config(
        prosody,
        udp={"allow": ["127.0.0.1/32"]},
        rooms={"wikis": ["opswiki"]},
        http={"listen": "127.0.0.1:0"},
    )
    bridge = await running_bridge(config)
    room = f"opswiki@{prosody.muc_domain}"
    try:
        await wait_for(lambda: room in bridge.sink.joined_rooms(), what="the room")
        assert bridge.http_address is not None
        base = "http://{}:{}".format(*bridge.http_address)
        async with reader(prosody, [room]) as client:
            target = bridge.addresses[0]
            with Emitter(*target) as emitter:
                for rcid in range(1, 6):  # changes made two minutes ago, by the wiki's clock
                    emitter.send(change("opswiki", rcid, age=120))
                emitter.send_raw(b"<rc>not xml")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outsider:
                outsider.bind(("127.0.0.2", 0))
                outsider.sendto(encode_datagram(change("opswiki", 99)), target)
            deliveries = await collect(client, 5)
            await wait_for(lambda: bridge.stats.received == 7, what="every datagram")
            status, text = await get(f"{base}/metrics")
            health_status, health_body = await get(f"{base}/healthz")
    finally:
        await bridge.stop()

    assert len(deliveries) == 5
    assert status == 200
    got = samples(text)
    assert got[("udp2xmpp_datagrams_received_total", ())] == 7
    assert got[("udp2xmpp_changes_accepted_total", ())] == 5
    assert got[("udp2xmpp_datagrams_rejected_total", (("reason", "bad_xml"),))] == 1
    assert got[("udp2xmpp_datagrams_rejected_total", (("reason", "not_allowed"),))] == 1
    assert got[("udp2xmpp_datagrams_rejected_total", (("reason", "rate_limited"),))] == 0
    assert got[("udp2xmpp_published_total", (("room", room),))] == 5
    assert got[("udp2xmpp_queue_depth", (("room", room),))] == 0
    assert got[("udp2xmpp_dropped_total", (("reason", "overflow"),))] == 0
    assert got[("udp2xmpp_xmpp_connected", ())] == 1
    assert got[("udp2xmpp_xmpp_state", (("state", "online"),))] == 1
    assert got[("udp2xmpp_udp_listening", ())] == 1
    # The delay is measured from the change's own timestamp: two minutes and a bit.
    assert got[("udp2xmpp_publish_delay_seconds_count", ())] == 5
    assert got[("udp2xmpp_publish_delay_seconds_bucket", (("le", "60.0"),))] == 0
    assert got[("udp2xmpp_publish_delay_seconds_bucket", (("le", "300.0"),))] == 5
    assert got[("udp2xmpp_publish_delay_seconds_sum", ())] >= 5 * 120
    assert health_status == 200
    health = json.loads(health_body)
    assert health["status"] == "ok" and health["xmpp"] == "online"
    assert health["udp"] == ["{}:{}".format(*bridge.addresses[0])]


async def test_healthz_is_503_while_the_xmpp_server_is_down(
    fresh_prosody: ProsodyServer,
) -> None:
    config = bridge_config(fresh_prosody, http={"listen": "127.0.0.1:0"})
    bridge = await running_bridge(config)
    try:
        assert bridge.http_address is not None
        base = "http://{}:{}".format(*bridge.http_address)
        status, body = await get(f"{base}/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        fresh_prosody.stop()
        await wait_for(lambda: not bridge.sink.online, what="the bridge to notice")
        status, body = await get(f"{base}/healthz")
        _, metrics = await get(f"{base}/metrics")
    finally:
        await bridge.stop(drain_timeout=0)
    assert status == 503
    health = json.loads(body)
    assert health["status"] == "unavailable" and health["xmpp"] != "online"
    assert samples(metrics)[("udp2xmpp_xmpp_connected", ())] == 0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_process_logs_json_lines_and_serves_healthz(
    tmp_path: Path, prosody: ProsodyServer
) -> None:
    udp_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[xmpp]
jid = "rcbot@{prosody.domain}"
password_env = "TEST_BRIDGE_PASSWORD"
host = "{prosody.host}"
port = {prosody.c2s_port}
ca_file = "{prosody.ca_file}"
[udp]
listen = "127.0.0.1:{udp_port}"
[rooms]
service = "{prosody.muc_domain}"
wikis = ["logwiki"]
[http]
listen = "127.0.0.1:{http_port}"
"""
    )
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log_file:  # not a terminal: JSON lines by default
        process = await asyncio.create_subprocess_exec(
            str(BIN / "udp2xmpp"), "--config", str(config), stdout=log_file, stderr=log_file,
            env={"TEST_BRIDGE_PASSWORD": "bridgepass"},
        )  # fmt: skip
    try:
        room = f"logwiki@{prosody.muc_domain}"
        await wait_for(lambda: f"joined {room}" in log_path.read_text(), 30, "the bridge")
        status, body = await get(f"http://127.0.0.1:{http_port}/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        with Emitter("127.0.0.1", udp_port) as emitter:
            emitter.send_raw(b"<rc>broken")
        await wait_for(lambda: "bad_xml" in log_path.read_text(), 20, "the warning")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    entries: list[dict[str, Any]] = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert all(entry["time"].endswith("Z") for entry in entries)
    warning = next(e for e in entries if "bad_xml" in e["message"])
    assert warning["level"] == "warning" and warning["logger"] == "udp2xmpp.bridge"
    assert warning["message"].startswith("dropped a datagram from 127.0.0.1: bad_xml")
    assert any(e["message"] == "stopped" for e in entries)
    assert any(e["message"].startswith("metrics and health on http://127.0.0.1:") for e in entries)
