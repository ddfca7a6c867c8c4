"""``rc2udp replay``: recorded changes to a bridge, with a progress bar on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from xmlrc.wire import RecentChange, change_from_json, decode_datagram

SAMPLES = Path(__file__).parents[2] / "rc2udp" / "samples" / "sample-changes.jsonl"
REPLAY = [sys.executable, "-m", "rc2udp", "replay", str(SAMPLES), "--speed", "max"]


def _receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def _on_a_terminal(args: list[str], until: Callable[[str], bool] | None = None) -> str:
    """Run `args` with stderr on a pseudo-terminal; what it wrote there.

    With `until`, the program (one that runs on) is stopped once `until(output)`
    holds (at most 60 s), instead of being waited for.
    """
    master, slave = pty.openpty()
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if until is not None and until(output.decode(errors="replace")):
                break
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        else:
            raise AssertionError(f"timed out; output so far: {output[-500:]!r}")
        if until is None:
            assert process.wait(timeout=30) == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return output.decode(errors="replace")


def _datagrams_received(sock: socket.socket, at_least: int) -> Callable[[str], bool]:
    """A condition: `sock` has received `at_least` datagrams from now on."""
    count = 0
    sock.setblocking(False)

    def drain() -> int:
        for n in range(100_000):
            try:
                sock.recv(65535)
            except BlockingIOError:
                return n
        return 100_000

    drain()  # what earlier runs sent does not count

    def check(_output: str) -> bool:
        nonlocal count
        count += drain()
        return count >= at_least

    return check


def test_progress_bar_on_a_terminal_or_when_asked_only() -> None:
    with _receiver() as sock:
        target = ["--target", "{}:{}".format(*sock.getsockname())]
        terminal = _on_a_terminal([*REPLAY, *target])
        assert "replaying" in terminal and "100%" in terminal
        piped = subprocess.run(
            [*REPLAY, *target], capture_output=True, text=True, timeout=60, check=True
        )
        assert "replaying" not in piped.stderr
        assert "sent 28 changes" in piped.stderr
        asked = subprocess.run(
            [*REPLAY, *target, "--progress"], capture_output=True, text=True, timeout=60, check=True
        )
        assert "replaying" in asked.stderr
        hushed = _on_a_terminal([*REPLAY, *target, "--no-progress"])
        assert "replaying" not in hushed and "sent 28 changes" in hushed
        # A replay that loops never ends: no bar unless asked (the demo's terminal).
        looping = _on_a_terminal([*REPLAY, *target, "--loop"], _datagrams_received(sock, 100))
        assert "replaying" not in looping and "round" not in looping
        asked_looping = _on_a_terminal(
            [*REPLAY, *target, "--loop", "--progress"], lambda text: "round 3" in text
        )
        assert "round 1" in asked_looping and "round 2" in asked_looping


def test_loop_replays_with_fresh_ids_and_mixed_formats() -> None:
    lines = SAMPLES.read_text().splitlines()
    recorded = [change_from_json(json.loads(line)) for line in lines]
    with _receiver() as sock:
        sock.settimeout(10)
        target = "{}:{}".format(*sock.getsockname())
        process = subprocess.Popen(
            [*REPLAY, "--target", target, "--loop", "--format", "mixed", "--progress"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            datagrams = [sock.recv(65535) for _ in range(3 * len(lines))]
        finally:
            process.kill()
            process.wait()
    kinds = {
        "mw-json" if d.startswith(b"{") else "xmlrc" if d.startswith(b"<rc") else "mw-xml"
        for d in datagrams
    }
    assert kinds == {"xmlrc", "mw-json", "mw-xml"}
    changes = [decode_datagram(d) for d in datagrams]
    rounds = [changes[n : n + len(lines)] for n in range(0, len(changes), len(lines))]
    ids = []
    for changes_of_round in rounds:
        assert all(isinstance(c, RecentChange) for c in changes_of_round)
        assert [c.title for c in changes_of_round if isinstance(c, RecentChange)] == [
            c.title for c in recorded
        ]
        ids.append({c.stable_id for c in changes_of_round if isinstance(c, RecentChange)})
    assert ids[0] == {c.stable_id for c in recorded}  # round one is the recording
    # Later rounds renumber: no stable id of one round comes back in another.
    assert all(ids[a].isdisjoint(ids[b]) for a in range(3) for b in range(a + 1, 3))
