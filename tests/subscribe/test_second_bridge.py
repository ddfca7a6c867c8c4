"""An operator starts a second bridge on a subscription database in use: it stops at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from udp2xmpp.subscribe.store import SubscriptionStore

BIN = Path(sys.executable).parent


def test_a_second_bridge_on_the_same_database_exits_with_a_clear_message(tmp_path: Path) -> None:
    database = tmp_path / "subs.sqlite"
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[xmpp]
jid = "rcbot@localhost"
password = "unused"
host = "127.0.0.1"
port = 9                       # nothing listens: the bridge must stop before it connects
[udp]
listen = "127.0.0.1:0"
[rooms]
service = "conference.localhost"
[subscriptions]
enabled = true
database = "{database}"
"""
    )
    running = SubscriptionStore.open(database)  # the first bridge holds it
    try:
        result = subprocess.run(
            [str(BIN / "udp2xmpp"), "--log-format", "text", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        running.close()
    assert result.returncode == 1, result.stderr
    assert f"subscriptions database {database} is in use by another udp2xmpp" in result.stderr
    assert "Traceback" not in result.stderr
