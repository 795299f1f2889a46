"""Start, watch and stop a plugin server as Kong does, and ask it which plugins it serves.

From `kong/runloop/plugin_servers/process.lua`:
- `query_cmd` runs through the shell (`io.popen`) and prints JSON: a list, or
  `{"Protocol", "Plugins"}`; Name, Priority (integer), Version ("x.y.z"; null or 4+ parts
  refused, as `load_plugin_handler` does), Phases and Schema are kept. Kong >= 3.9 keeps only
  the first plugin of each query; the host keeps all (so `kong-python-pluginserver -d DIR`
  works with several plugins) unless the entry says `first_only`, as `credits_servers`
  (kong/kong.conf's entries) does;
- `start_cmd` runs as `exec <start_cmd>` with stderr merged into stdout, each line logged with
  `[name:pid]`; it is respawned when it exits (at most once a second), except after exit 127
  (command not found); stop sends SIGTERM. It runs in the environment of a Kong worker, which
  nginx has cleared (see `worker_environment`); `query_cmd` runs with Kong's whole one.
Unlike Kong 3.5+, `wait_ready` waits until the socket accepts, so the first request does not
race the server's startup.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CREDITS_QUERY_CMD",
    "CREDITS_START_CMD",
    "PluginInfo",
    "PluginInfoError",
    "PluginServerProcess",
    "PluginServerSpec",
    "credits_server",
    "credits_servers",
    "kong_pdk_server",
    "parse_plugin_info",
    "query_plugins",
    "resolve_command",
    "wait_for_socket",
    "worker_environment",
]

_logger = logging.getLogger("kong_credits.host.pluginserver")
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_KNOWN_PHASES = {"certificate", "rewrite", "access", "response", "preread", "log"}
_KEPT_BY_NGINX = ("TZ",)
_KEPT_BY_HOST = ("PATH",)


class PluginInfoError(ValueError):
    """The query output cannot be used; Kong would refuse to load the plugin(s)."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    priority: int
    version: str
    phases: tuple[str, ...]
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class PluginServerSpec:
    """One `pluginserver_names` entry: socket, and the commands Kong would run."""

    name: str
    socket_path: str
    start_cmd: str | None = None
    query_cmd: str | None = None
    first_only: bool = False
    """Register only the first plugin the query prints, as Kong >= 3.9 does."""


CREDITS_START_CMD = "kong-credits pluginserver -p {prefix} --socket-name {socket_name}"
CREDITS_QUERY_CMD = "kong-credits pluginserver --dump-all-plugins"


def credits_server(
    prefix: str | Path,
    *,
    socket_name: str = "credits.socket",
    start_cmd: str = CREDITS_START_CMD,
    query_cmd: str = CREDITS_QUERY_CMD,
) -> PluginServerSpec:
    """The project's plugin server (`kong-credits pluginserver`), socket `<prefix>/credits.socket`.

    `{prefix}`, `{socket}` and `{socket_name}` in the commands are filled in.
    """
    socket_path = str(Path(prefix) / socket_name)
    fill = {"prefix": shlex.quote(str(prefix)), "socket": shlex.quote(socket_path),
            "socket_name": shlex.quote(socket_name)}
    return PluginServerSpec("credits", socket_path, resolve_command(start_cmd.format(**fill)),
                            resolve_command(query_cmd.format(**fill)))


def credits_servers(prefix: str | Path, *, socket_name: str = "credits.socket"
                    ) -> list[PluginServerSpec]:
    """kong/kong.conf's two entries, as Kong 3.9+ reads them: `credits` starts the server,
    `credits-metered` shares its socket; each query prints its own plugin first and only that
    one is registered."""
    entries = []
    for name in ("credits", "credits-metered"):
        spec = credits_server(prefix, socket_name=socket_name,
                              query_cmd=f"{CREDITS_QUERY_CMD} --first {name}")
        entries.append(PluginServerSpec(name, spec.socket_path,
                                        spec.start_cmd if name == "credits" else None,
                                        spec.query_cmd, first_only=True))
    return entries


def kong_pdk_server(
    plugins_dir: str | Path,
    prefix: str | Path,
    *,
    name: str = "python",
    gevent: bool = True,
    executable: str | None = None,
) -> PluginServerSpec:
    """Stock kong-pdk: `kong-python-pluginserver [-g] -d DIR -p PREFIX` on its default socket
    `<prefix>/python_pluginserver.sock`, queried with `--dump-all-plugins`."""
    exe = executable or _venv_executable("kong-python-pluginserver")
    directory = shlex.quote(str(plugins_dir))
    socket_path = str(Path(prefix) / "python_pluginserver.sock")
    mode = " -g" if gevent else ""
    start = f"{shlex.quote(exe)}{mode} -d {directory} -p {shlex.quote(str(prefix))}"
    query = f"{shlex.quote(exe)} -d {directory} --dump-all-plugins"
    return PluginServerSpec(name, socket_path, start, query)


def _venv_executable(name: str) -> str:
    """Prefer the script installed next to this Python (the venv), else rely on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def resolve_command(command: str) -> str:
    """Run `command`'s program from this Python's venv when it is not on PATH.

    `kong-credits pluginserver ...` then works from an unactivated venv, as in CI.
    """
    program, _, rest = command.strip().partition(" ")
    if not program or "/" in program or shutil.which(program):
        return command
    resolved = _venv_executable(program)
    return f"{shlex.quote(resolved)} {rest}".rstrip() if resolved != program else command


def parse_plugin_info(output: str, source: str = "query_cmd") -> list[PluginInfo]:
    """Parse a query_cmd's stdout; raise PluginInfoError with Kong's wording."""
    try:
        dump = json.loads(output)
    except ValueError as exc:
        raise PluginInfoError(f"failed decoding plugin info: {exc} (from {source})") from exc
    entries = dump.get("Plugins") if isinstance(dump, Mapping) else dump
    if not isinstance(entries, list) or not entries:
        raise PluginInfoError(f"not a plugin info table: \n{source}\n{output}")
    return [_plugin_info(entry) for entry in entries]


def _plugin_info(entry: Any) -> PluginInfo:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("Name"), str):
        raise PluginInfoError(f"plugin info without a Name: {entry!r}")
    name = entry["Name"]
    priority = entry.get("Priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise PluginInfoError(f'Plugin "{name}" cannot be loaded because its PRIORITY field '
                              f'is not a valid integer number, got: "{priority}".')
    version = entry.get("Version")
    if not isinstance(version, str) or not _VERSION.match(version.strip()):
        shown = "nil" if version is None else version
        raise PluginInfoError(f'Plugin "{name}" cannot be loaded because its VERSION field '
                              f'does not follow the "x.y.z" format, got: "{shown}".')
    phases = tuple(entry.get("Phases") or ())
    unknown = set(phases) - _KNOWN_PHASES
    if unknown:
        raise PluginInfoError(f"plugin {name!r} lists unknown phases {sorted(unknown)}")
    schema = entry.get("Schema") or {"name": name, "fields": []}
    return PluginInfo(name, priority, version.strip(), phases, schema)


def query_plugins(query_cmd: str, timeout_s: float = 30.0) -> list[PluginInfo]:
    """Run `query_cmd` through the shell, like Kong's `io.popen`, and parse its output."""
    result = subprocess.run(query_cmd, shell=True, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    if result.returncode != 0 and not result.stdout.strip():
        raise PluginInfoError(f"error loading plugins info from [{query_cmd}]: exit "
                              f"{result.returncode}: {result.stderr.strip()[-2000:]}")
    return parse_plugin_info(result.stdout, source=query_cmd)


def worker_environment(
    nginx_main_env: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment Kong's worker 0 gives the plugin server it starts, from `environ`
    (default: this process's).

    nginx workers keep only TZ and what `env` directives name (`ngx_set_environment`, called by
    `ngx_worker_process_init`); kong.conf's `nginx_main_env = NAME` (or `KONG_NGINX_MAIN_ENV`)
    writes `env NAME;` into nginx.conf, and `ngx.pipe.spawn` hands the worker's environment on
    unchanged. Each entry is `NAME` (kept if set) or `NAME=value` (set), like `env`. PATH is
    kept too, where Kong keeps none (its /bin/sh falls back to a built-in search path): so a
    start_cmd may name a program on the host's PATH. kong.conf should give absolute paths.
    """
    source = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for entry in (*_KEPT_BY_NGINX, *_KEPT_BY_HOST, *nginx_main_env):
        name, equals, value = entry.partition("=")
        if equals:
            env[name] = value
        elif name in source:
            env[name] = source[name]
    return env


def wait_for_socket(path: str, timeout_s: float) -> None:
    """Block until a unix stream socket at `path` accepts a connection."""
    deadline = time.monotonic() + timeout_s
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"plugin server socket {path} not ready after "
                                   f"{timeout_s:g} s: {exc}") from exc
        finally:
            probe.close()
        time.sleep(0.02)


class PluginServerProcess:
    """Runs `exec <start_cmd>`, logs its output, respawns it, stops it with SIGTERM.

    A thread supervises the child so the process outlives any one event loop (tests start
    one loop per test). Use `start()`, `wait_ready()`, `stop()`. `env` is the child's whole
    environment; by default a Kong worker's with no `env` directive (`worker_environment()`).
    """

    RESPAWN_INTERVAL_S = 1.0

    def __init__(self, spec: PluginServerSpec, *, env: Mapping[str, str] | None = None) -> None:
        if not spec.start_cmd:
            raise ValueError(f"plugin server {spec.name!r} has no start_cmd")
        self.spec = spec
        self.env = dict(env) if env is not None else worker_environment()
        self.spawns = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name=f"ps-{self.spec.name}",
                                        daemon=True)
        self._thread.start()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        wait_for_socket(self.spec.socket_path, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the server (SIGKILL after `timeout_s`) and stop respawning it."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _supervise(self) -> None:
        next_spawn = 0.0
        while not self._stopping.is_set():
            delay = next_spawn - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
                break
            with self._lock:
                if self._stopping.is_set():
                    break
                _logger.info("starting pluginserver process for %s", self.spec.name)
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", f"exec {self.spec.start_cmd}"], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
                self._proc = proc
                self.spawns += 1
            next_spawn = time.monotonic() + self.RESPAWN_INTERVAL_S
            _logger.info("started, pid %d", proc.pid)
            self._grab_logs(proc)
            status = proc.wait()
            if self._stopping.is_set():
                break
            if status == 127:
                _logger.error('external pluginserver "%s" start command "%s" exited with '
                              '"command not found"', self.spec.name, self.spec.start_cmd)
                break
            _logger.info("external pluginserver '%s' terminated: exit %s", self.spec.name,
                         status)
        _logger.info("exiting: pluginserver '%s' not respawned.", self.spec.name)

    def _grab_logs(self, proc: subprocess.Popen[bytes]) -> None:
        stream: IO[bytes] | None = proc.stdout
        if stream is None:
            return
        prefix = f"[{self.spec.name}:{proc.pid}] "
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line:
                _logger.info("%s%s", prefix, line)
        stream.close()
