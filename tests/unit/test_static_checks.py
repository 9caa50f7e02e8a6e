"""The static checks (issue 6, item 7): ruff, mypy and bandit, configured in pyproject.toml.

Each tool runs as a subprocess from this interpreter's environment (the
``dev`` extra pins and installs them), in the repository root so that it reads
pyproject.toml, and must exit 0; when it does not, its whole output is the
failure message. What each one covers:

- ruff: the repository (``loadtest/`` excluded), rules E, F, W, B, ASYNC, S;
- mypy: the ``collab`` package, strict;
- bandit: the ``collab`` package, medium and high severity (``-ll``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: name -> (command line, deadline in seconds; mypy's first run builds its cache)
CHECKS: dict[str, tuple[list[str], float]] = {
    "ruff": (["ruff", "check", "--output-format", "concise", "."], 120.0),
    "mypy": (["mypy"], 600.0),  # the files and strictness come from [tool.mypy]
    "bandit": (["bandit", "-q", "-r", "collab", "-ll"], 300.0),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_static_check_passes(name: str) -> None:
    argv, deadline_s = CHECKS[name]
    tool = BIN / argv[0]
    assert tool.exists(), f"{tool} is missing: install the dev extra (pip install -e '.[dev]')"
    result = subprocess.run(
        [str(tool), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=deadline_s, check=False,
    )
    assert result.returncode == 0, (
        f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
