"""A real PostgreSQL server (Debian's `postgresql` package) on a free loopback port, made with
initdb in a temporary directory for the test session (conftest.py's `postgres`).

PostgreSQL refuses to run as root: under root the server runs as the `postgres` user, its data
directory owned by it. It dies with the test process (Linux PR_SET_PDEATHSIG, set after the
change of user, which would clear it), so a killed run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from kong_credits.redis_server import _free_port

USER = "kc"
PASSWORD = "pg-secret-Ünïcode"


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding initdb."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("the usage store tests need PostgreSQL: apt-get install postgresql")
    return Path(found[-1]).parent


def _as_server_user() -> None:
    """preexec_fn: drop to `postgres` when root, then ask to die with the parent."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class LocalPostgres:
    """initdb + postgres on 127.0.0.1:<free port>; `url(db)` connects as a password user."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.port = _free_port()
        self.fsync = fsync
        self._dir = Path(tempfile.mkdtemp(prefix="kong-credits-pg-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        from urllib.parse import quote

        return f"postgresql://{USER}:{quote(PASSWORD)}@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPostgres:
        binaries = postgres_bin()
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        data = self._dir / "data"
        password_file = self._dir / "password"
        password_file.write_text(PASSWORD)
        if os.geteuid() == 0:
            os.chown(password_file, pwd.getpwnam("postgres").pw_uid, -1)
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", USER, "--pwfile",
             str(password_file), "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--locale=C.UTF-8"],
            preexec_fn=_as_server_user, check=True, capture_output=True, timeout=120)
        options = ["-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                   "-k", str(self._dir), "-c", "max_connections=100"]
        if not self.fsync:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        self._process = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), *options],
            preexec_fn=_as_server_user, stdout=subprocess.DEVNULL,
            stderr=open(self._dir / "server.log", "wb"))  # noqa: SIM115 - the child keeps it
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError("postgres exited: "
                                       + (self._dir / "server.log").read_text()[-2000:]) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"usage_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
