"""`host_command` (registered as `kong-credits host`): a real process serving HTTP."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from click.testing import CliRunner
from waits import wait_until

from kong_credits.host.command import host_command

PLUGINS = Path(__file__).parent / "plugins"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_help_documents_the_defaults() -> None:
    result = CliRunner().invoke(host_command, ["--help"], terminal_width=400)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "kong-credits pluginserver -p {prefix} --socket-name {socket_name}" in text
    assert "kong-credits pluginserver --dump-all-plugins" in text
    assert "127.0.0.1:8000" in text


def test_serves_http_and_stops_its_plugin_server_on_sigterm(tmp_path: Path) -> None:
    proxy_port, upstream_port = free_port(), free_port()
    config = tmp_path / "kong.yml"
    config.write_text(yaml.safe_dump({
        "_format_version": "3.0",
        "services": [{"name": "s", "url": f"http://127.0.0.1:{upstream_port}", "routes": [
            {"name": "r", "paths": ["/"], "plugins": [{"name": "echo"}]}]}],
    }))
    command = [sys.executable, "-c",
               "from kong_credits.host.command import host_command; host_command()",
               "--config", str(config), "--listen", f"127.0.0.1:{proxy_port}",
               "--pdk-plugins-dir", str(PLUGINS),
               "--sample-upstream", f"127.0.0.1:{upstream_port}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def answer() -> httpx.Response | None:
        assert process.poll() is None, process.stdout.read().decode()
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            return httpx.get(f"http://127.0.0.1:{proxy_port}/anything?units=3",
                             headers={"x-echo": "cli"}, timeout=5)
        return None

    try:
        response = wait_until(answer, timeout_s=20, interval_s=0.1)
        assert response.status_code == 200
        assert response.headers["X-Echo"] == "cli"
        assert response.headers["X-Units-Used"] == "3"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output.decode()
    text = output.decode()
    assert "kong-credits host on http://127.0.0.1:" in text
    leftovers = subprocess.run(["pgrep", "-f", f"-d {PLUGINS} -p"], capture_output=True)
    assert leftovers.stdout == b""  # the plugin server was stopped with the host
