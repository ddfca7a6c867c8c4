"""The suite runs from any clone: no tracked file names a checkout's absolute path.

A test that points at one developer's virtualenv (``/home/dev/xmlrc/.venv/...``)
passes only where that path happens to exist; it failed from a newcomer's
clone. Programs are found next to ``sys.executable`` instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# An absolute path into a virtualenv's directory, e.g. /home/x/xmlrc/.venv/bin/rcclient.
ABSOLUTE_VENV = re.compile(r"(?<![\w.$)}])/(?:[\w.-]+/)+\.venv/")
# What runs from the clone (examples/ holds deployment paths such as /opt/xmlrc/.venv).
CHECKED = ("tests/", "benchmarks/", "harness/", "scripts/", ".ci/", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".toml", ".cfg", ".ini", ".sh", ".lua", ".service", ".php", ""}


def tracked_text_files(*, everywhere: bool = False) -> list[Path]:
    """What runs from the clone; with `everywhere`, every tracked text file (docs too)."""
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    suffixes = TEXT_SUFFIXES | ({".md", ".yml", ".json", ".html", ".js"} if everywhere else set())
    return [
        ROOT / n
        for n in names
        if (everywhere or n.startswith(CHECKED))
        and Path(n).suffix in suffixes
        and (ROOT / n).is_file()
    ]


def test_the_scan_sees_the_project() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in tracked_text_files()}
    assert "tests/rcclient/util.py" in names
    assert "Makefile" in names


def test_no_tracked_file_names_this_checkout_or_an_absolute_venv() -> None:
    offenders = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue  # this file spells the pattern out on purpose
        text = path.read_text(encoding="utf-8", errors="replace")
        if str(ROOT) in text or ABSOLUTE_VENV.search(text):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []


def test_no_tracked_file_anywhere_names_this_checkout() -> None:
    """Docs and examples too: a pasted profile named the development checkout in every path"""
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in tracked_text_files(everywhere=True)
        if str(ROOT) in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert offenders == []


def test_the_pattern_catches_what_broke_a_clean_clone() -> None:
    assert ABSOLUTE_VENV.search('RCCLIENT = "/home/dev/xmlrc/.venv/bin/rcclient"')
    assert not ABSOLUTE_VENV.search("$(VENV)/bin/pytest and .venv/bin/rcclient")
