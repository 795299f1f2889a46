"""skip_check: a skip that is not declared expected fails the run, as a failed test would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("no printer attached")
"""
MISSING_EXTRA = "could not import 'no_such_extra': No module named 'no_such_extra'"


def run_pytest(folder: Path, expected_skips: list[str]) -> tuple[int, str, list[str]]:
    """Runs pytest on two test files, one skipped whole: (exit code, stats, undeclared)."""
    (folder / "pytest.ini").write_text(
        "[pytest]\nexpected_skips =\n" + "".join(f"    {r}\n" for r in expected_skips))
    (folder / "test_sample.py").write_text(SAMPLE)
    (folder / "test_extra.py").write_text("import pytest\npytest.importorskip('no_such_extra')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "skip_check", "-p", "no:cacheprovider"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()  # ..., [== skips not declared ... ==, ...,] == stats ==
    start = next((i for i, line in enumerate(lines) if " skips not declared " in line), -2)
    return done.returncode, lines[-1].strip("= "), [line for line in lines[start + 1:-1] if line]


def test_an_undeclared_skip_fails_the_run(tmp_path: Path) -> None:
    code, stats, undeclared = run_pytest(tmp_path, ["no printer attached"])
    assert code == pytest.ExitCode.TESTS_FAILED
    assert stats.startswith("1 passed, 2 skipped in ")
    assert undeclared == [f"test_extra.py: {MISSING_EXTRA}"]


def test_declared_skips_pass(tmp_path: Path) -> None:
    code, stats, undeclared = run_pytest(tmp_path, ["no printer attached", MISSING_EXTRA])
    assert (code, undeclared) == (pytest.ExitCode.OK, [])
    assert stats.startswith("1 passed, 2 skipped in ")


def test_this_suite_runs_with_the_check(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("skip_check")
    assert pytestconfig.getini("expected_skips") == []
