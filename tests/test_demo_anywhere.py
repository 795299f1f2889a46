"""`kong-credits demo` from a wheel, run outside the repository, and stopped by signals.

The package is built into a wheel and installed (without dependencies, which the test venv
has) into a directory put first on PYTHONPATH: the demo then runs the installed copy, from a
temporary directory, as it would after `pip install kong-credits`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import wait_until

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "plugins" / "kong_credits" / "demo_data"
# Python leaves SIGINT ignored when it starts ignored (a job started in the background by a
# shell without job control, as CI may run us): restore what a terminal's Ctrl-C finds.
LAUNCH = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from kong_credits.cli import main; sys.exit(main())")


def test_the_demo_data_are_copies_of_the_repository_files():
    """kong/kong.yml and config/pricing.yaml are the sources: copy them here after a change."""
    assert (DEMO_DATA / "kong.yml").read_text() == (ROOT / "kong" / "kong.yml").read_text()
    assert (DEMO_DATA / "pricing.yaml").read_text() == \
        (ROOT / "config" / "pricing.yaml").read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel from a clean copy and installed into a directory."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", "tests", "load"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(base / "dist"), str(source)], check=True, timeout=240,
                   capture_output=True)
    (wheel,) = (base / "dist").glob("kong_credits-*.whl")
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=120, capture_output=True)
    assert (target / "kong_credits" / "demo_data" / "kong.yml").is_file()
    return target


def _env(installed: Path, tmp: Path) -> dict[str, str]:
    os.makedirs(tmp, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(installed), "TMPDIR": str(tmp),
            "PYTHONUNBUFFERED": "1", "PATH": f"{Path(sys.executable).parent}:"
                                             f"{os.environ.get('PATH', '')}"}


def test_the_installed_demo_runs_from_any_directory(installed, tmp_path):
    """With its own embedded Redis: the session's has wallets earlier tests funded."""
    where = tmp_path / "elsewhere"
    where.mkdir()
    done = subprocess.run([sys.executable, "-c", LAUNCH, "demo"],
                          cwd=where, env=_env(installed, tmp_path / "tmp"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 requests: 12 x 200, 1 x 401, 4 x 402, 3 x 429" in done.stdout
    assert "/generate  20 held, then the X-Units-Used header" in done.stdout
    assert list(where.iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() \
            else []
        found.extend(int(c) for c in children)
    return found


def _descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    pending = [pid]
    while pending:
        for child in _children(pending.pop()):
            if child not in seen:
                seen.add(child)
                pending.append(child)
    return seen


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def demo_process(installed: Path, tmp_path: Path
                 ) -> Iterator[tuple[subprocess.Popen, Path, set[int]]]:
    """The running demo, its temporary directory and the processes it started."""
    tmp = tmp_path / "tmp"
    log = (tmp_path / "demo.log").open("w+")
    process = subprocess.Popen([sys.executable, "-c", LAUNCH, "demo", "--keep-running"],
                               cwd=tmp_path, env=_env(installed, tmp), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    started: set[int] = set()
    try:
        wait_until(lambda: "Still running" in (tmp_path / "demo.log").read_text(),
                   timeout_s=90)
        started |= _descendants(process.pid)
        yield process, tmp, started
    finally:  # after a failure: stop whatever the demo left running
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_everything_the_demo_started(demo_process, signum):
    process, tmp, started = demo_process
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in started}
    assert "redis-server" in names  # the embedded Redis, plus the plugin server
    assert len(list(tmp.iterdir())) == 2  # the host's prefix and the Redis data directory
    process.send_signal(signum)
    assert process.wait(timeout=60) == 0
    wait_until(lambda: not any(_alive(pid) for pid in started), timeout_s=20)
    assert list(tmp.iterdir()) == []
