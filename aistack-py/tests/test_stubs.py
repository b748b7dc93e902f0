"""The shipped type stubs match the built module (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A pydantic private attribute is a descriptor at runtime by design; nothing else is allowed.
ALLOWLIST = Path(__file__).with_name("stubtest-allowlist.txt")


def test_stubs_match_the_module():
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "aistack", "--allowlist", str(ALLOWLIST)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
