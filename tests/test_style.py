"""The code base stays ruff-clean: the README's test command checks style too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    beside_python = Path(sys.executable).with_name("ruff")
    ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
    assert ruff, "ruff is not installed (pip install '.[test]')"
    paths = [name for name in ("plugins", "tests", "load") if (ROOT / name).exists()]
    done = subprocess.run([ruff, "check", *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
