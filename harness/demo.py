"""``make demo``: the whole pipeline on this machine, until Ctrl-C.

Starts a throwaway Prosody on loopback (with XMPP over WebSocket and an anonymous
host), the bridge (``udp2xmpp``, serving the live-feed web page), a reader
(``rcclient tail``) printing changes live, and ``rc2udp replay`` sending real
MediaWiki 1.39 sample changes for two wikis over UDP in every datagram format.
Everything runs as the separate programs an operator would run; everything
is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .prosody import ProsodyServer

SAMPLES = Path(__file__).resolve().parents[1] / "rc2udp" / "samples" / "sample-changes.jsonl"
WIKIS = ("testwiki", "devwiki")


def _tool(name: str) -> str:
    """The console script next to this Python (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"demo: {name} is not installed (run `make install`)")
    return found


def _wait_for_log(
    path: Path, needles: list[str], timeout: float, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if all(needle in text for needle in needles):
            return
        if proc.poll() is not None:
            raise SystemExit(f"demo: the bridge exited early:\n{text[-2000:]}")
        time.sleep(0.1)
    raise SystemExit(f"demo: the bridge did not get ready in {timeout:.0f} s; see {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", default="4", help="changes per second sent (default 4)")
    parser.add_argument("--udp-port", type=int, default=9390)
    parser.add_argument("--http-port", type=int, default=9391, help="the page (and /metrics)")
    parser.add_argument("--count", type=int, default=None, help="stop after N changes printed")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="xmlrc-demo-"))
    prosody = ProsodyServer(workdir / "prosody", web=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        prosody.add_user("rcbot", "bridgepass")
        prosody.add_user("reader", "readerpass")
        prosody.start()
        print(f"# Prosody on {prosody.host}:{prosody.c2s_port} (data in {workdir})", flush=True)

        config = workdir / "bridge.toml"
        config.write_text(
            f"""# Written by the demo; see examples/bridge.toml for every key.
[xmpp]
jid = "rcbot@{prosody.domain}"
password = "bridgepass"
host = "{prosody.host}"
port = {prosody.c2s_port}
ca_file = "{prosody.ca_file}"

[udp]
listen = "127.0.0.1:{args.udp_port}"

[rooms]
service = "{prosody.muc_domain}"
room = "{{wiki}}"
nick = "rcbot"
wikis = {list(WIKIS)!r}

[http]
listen = "127.0.0.1:{args.http_port}"
page = true
page_websocket = "{prosody.websocket_url}"
page_domain = "{prosody.anonymous_domain}"
""".replace("'", '"')
        )
        bridge_log = workdir / "udp2xmpp.log"
        with bridge_log.open("wb") as log_file:
            bridge = subprocess.Popen(
                [_tool("udp2xmpp"), "--config", str(config)], stdout=log_file, stderr=log_file
            )
        processes.append(bridge)
        rooms = [f"{wiki}@{prosody.muc_domain}" for wiki in WIKIS]
        _wait_for_log(bridge_log, [f"joined {room}" for room in rooms], 30, bridge)
        page = f"http://127.0.0.1:{args.http_port}/"
        print(f"# the live feed in a browser: {page}", flush=True)
        print(f"# udp2xmpp: UDP 127.0.0.1:{args.udp_port} -> {', '.join(rooms)}", flush=True)
        print(f"#   (its log: {bridge_log})", flush=True)
        # An account file for your own rcclient, examples and bots against this demo.
        account = workdir / "rcclient.toml"
        account.write_text(
            f'[account]\njid = "reader@{prosody.domain}"\npassword = "readerpass"\n'
            f'host = "{prosody.host}"\nport = {prosody.c2s_port}\nca_file = "{prosody.ca_file}"\n'
        )
        print(f"#   try in another terminal: export RCCLIENT_CONFIG={account}", flush=True)
        print(f"#   then: .venv/bin/rcclient tail --json {rooms[0]}", flush=True)

        tail_cmd = [
            _tool("rcclient"),
            "tail",
            "--jid",
            f"reader@{prosody.domain}",
            "--password",
            "readerpass",
            "--host",
            prosody.host,
            "--port",
            str(prosody.c2s_port),
            "--ca-file",
            str(prosody.ca_file),
            *rooms,
        ]
        if args.count:
            tail_cmd += ["--count", str(args.count)]
        reader = subprocess.Popen(tail_cmd)
        processes.append(reader)
        time.sleep(1.5)  # let the reader join before the first change is sent
        replay = subprocess.Popen(
            [
                _tool("rc2udp"),
                "replay",
                str(SAMPLES),
                "--target",
                f"127.0.0.1:{args.udp_port}",
                "--speed",
                args.speed,
                "--format",
                "mixed",
                "--loop",
                "--no-progress",  # the terminal belongs to rcclient tail
            ],
        )
        processes.append(replay)
        print(
            "# rc2udp replay: real MediaWiki 1.39 changes, every datagram format. Ctrl-C stops.",
            flush=True,
        )
        while all(p.poll() is None for p in processes):
            time.sleep(0.2)
        if reader.returncode not in (None, 0):
            return reader.returncode
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        prosody.stop()
        if os.environ.get("XMLRC_DEMO_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)
        print("\n# demo stopped; everything it started is gone.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
