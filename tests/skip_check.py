"""pytest plugin: a run with a skip nobody declared expected fails.

A skipped test proves nothing, and a missing test extra or a moved module would otherwise
pass as "1 skipped". Expected skips are declared by their exact reason in `expected_skips`
under [tool.pytest.ini_options] (pyproject.toml); any other skip, of a test or of a whole
module, fails the run (exit 1) however green it is. Loaded by tests/conftest.py.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("expected_skips", "skip reasons that do not fail the run", type="linelist")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipCheck(config.getini("expected_skips")))


class SkipCheck:
    def __init__(self, expected: list[str]) -> None:
        self.expected = set(expected)
        self.undeclared: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._check(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._check(report)

    def _check(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        assert isinstance(report.longrepr, tuple)  # (path, line, reason) for every skip
        reason = report.longrepr[2].removeprefix("Skipped: ")
        if reason not in self.expected:
            self.undeclared.append(f"{report.nodeid}: {reason}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.undeclared and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.undeclared:
            terminalreporter.section("skips not declared in expected_skips", sep="=", red=True)
            for line in self.undeclared:
                terminalreporter.write_line(line)
