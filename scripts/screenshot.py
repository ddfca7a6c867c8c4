"""Regenerate the page's screenshot (``make screenshot``): run its browser test flow,
which saves the page as it shows the test's changes when $XMLRC_PAGE_SCREENSHOT is set.

    python scripts/screenshot.py docs/page.png
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = (
    "tests/web/test_page.py::test_changes_appear_with_their_fields_filters_hide_and_html_stays_text"
)


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/page.png").resolve()
    target.unlink(missing_ok=True)
    env = {**os.environ, "XMLRC_PAGE_SCREENSHOT": str(target)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", TEST], cwd=ROOT, env=env)
    if done.returncode != 0 or not target.exists():
        print(f"screenshot: the test failed or saved nothing; {target} not written")
        return 1
    print(f"screenshot: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
