"""The board's client logic under node's own test runner (tests/browser/unit/*.test.mjs).

No browser: the replica's seq rules and the optimistic overlay are pure
modules, and the protocol client runs against a scripted fake socket. Needs
only node (skipped without it, except in CI where it fails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent / "unit"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
DEADLINE_S = 120


def test_client_logic_with_node() -> None:
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node is needed for the board's client tests in CI")
        pytest.skip("node is not installed")
    files = sorted(str(p) for p in UNIT_DIR.glob("*.test.mjs"))
    assert files, f"no client tests in {UNIT_DIR}"
    run = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files], capture_output=True, text=True, timeout=DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "# fail 0" in output and "# pass 0" not in output, output
