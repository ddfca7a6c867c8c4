"""The shipped examples/prosody.cfg.lua, whole, passes Prosody's own check (prosodyctl
check config: syntax, unknown and obsolete options, per-host options in the global
section), once its system paths point into a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prosody.cfg.lua"


def test_the_shipped_prosody_config_passes_prosodyctl_check_config() -> None:
    prosodyctl = shutil.which("prosodyctl")
    assert prosodyctl is not None, "prosody is not installed: run make install"
    # prosodyctl reads the config as the prosody user: pytest's tmp_path (0700) is
    # closed to it, so a world-readable directory of our own, removed at the end.
    with tempfile.TemporaryDirectory(prefix="prosody-check-") as directory:
        tmp = Path(directory)
        tmp.chmod(0o755)
        check(prosodyctl, tmp)


def check(prosodyctl: str, tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for system, local in (
        ("/var/log/prosody/prosody.log", tmp_path / "prosody.log"),
        ("/var/log/prosody/prosody.err", tmp_path / "prosody.err"),
        ("/run/prosody/prosody.pid", tmp_path / "prosody.pid"),
    ):
        assert f'"{system}"' in text, system
        text = text.replace(f'"{system}"', f'"{local}"')
    (tmp_path / "certs").mkdir()  # certificates = "certs", next to the config
    config = tmp_path / "prosody.cfg.lua"
    config.write_text(text)
    config.chmod(0o644)
    result = subprocess.run(
        [prosodyctl, "--config", str(config), "check", "config"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All checks passed" in output, output
    for section in ('VirtualHost "anon.example.org"', '"websocket";', '"bosh";'):
        assert section in text
