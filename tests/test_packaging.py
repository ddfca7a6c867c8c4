"""The wheel ships only what operators, bots and researchers run.

The throwaway-server harness, the demo, the tests and the benchmarks stay
in the clone; this builds the wheel and reads its file list.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("xmlrc/", "udp2xmpp/", "rcclient/", "rc2udp/", "xmlrc_emitter/")


def test_wheel_holds_only_the_product(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("xmlrc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    print("\n".join(names))  # `pytest -s tests/test_packaging.py` lists the wheel
    code = [n for n in names if ".dist-info/" not in n]
    assert "udp2xmpp/bridge.py" in code
    assert "xmlrc/wire/model.py" in code
    outside = [n for n in code if not n.startswith(PRODUCT)]
    assert outside == []
    dev = [n for n in code if "/dev/" in n or "harness" in n or "demo" in n or "test" in n]
    assert dev == []
