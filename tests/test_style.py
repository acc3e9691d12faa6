"""The code passes the project's lint settings (pyproject.toml [tool.ruff]: pycodestyle and pyflakes at 120
columns): unused imports and names, undefined names and long lines fail the suite, not a reviewer."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff comes with the dev extra")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
