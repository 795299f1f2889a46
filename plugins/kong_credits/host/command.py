"""`kong-credits host`: serve a kong.yml locally through the Kong-side test host.

Defaults start the project's plugin server like Kong would with
`pluginserver_credits_start_cmd = kong-credits pluginserver -p PREFIX --socket-name
credits.socket` and `..._query_cmd = kong-credits pluginserver --dump-all-plugins`; PREFIX
is a fresh temporary directory unless `--prefix` is given. `{prefix}`, `{socket}` and
`{socket_name}` in `--plugin-server-cmd`/`--query-cmd`/`--socket` are filled in.
`--pdk-plugins-dir DIR` drives stock kong-pdk instead (`kong-python-pluginserver -g -d DIR`).
The plugin server gets a Kong worker's cleared environment: TZ, PATH and each
`--nginx-main-env NAME` (kong.conf's `nginx_main_env`), e.g. KONG_CREDITS_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml

from .declarative import DeclarativeError
from .host import Host, HostError
from .proxy import ProxyServer
from .supervisor import (
    CREDITS_QUERY_CMD,
    CREDITS_START_CMD,
    PluginInfoError,
    PluginServerSpec,
    kong_pdk_server,
    resolve_command,
)
from .upstream import SampleUpstream, point_services_at

__all__ = ["host_command"]


def _address(value: str) -> tuple[str, int]:
    address, _, port = value.rpartition(":")
    if not address or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return address, int(port)


@click.command("host")
@click.option("--config", "config_path", default="kong/kong.yml", show_default=True,
              type=click.Path(exists=True, dir_okay=False), help="Kong 3.x declarative config.")
@click.option("--listen", default="127.0.0.1:8000", show_default=True,
              help="HOST:PORT of the HTTP listener.")
@click.option("--prefix", type=click.Path(file_okay=False), default=None,
              help="Directory for the plugin server socket [default: a temporary directory].")
@click.option("--plugin-server-cmd", default=CREDITS_START_CMD, show_default=True,
              help="Kong's start_cmd; empty to connect to a server managed elsewhere.")
@click.option("--query-cmd", default=CREDITS_QUERY_CMD, show_default=True,
              help="Kong's query_cmd (prints the plugins' info JSON).")
@click.option("--socket", "socket_path", default="{prefix}/credits.socket", show_default=True,
              help="Plugin server socket path.")
@click.option("--pdk-plugins-dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="Use stock kong-pdk (gevent) on this plugins directory.")
@click.option("--sample-upstream", default=None, metavar="HOST:PORT",
              help="Also serve the sample echo upstream there (for the demo kong.yml).")
@click.option("--rpc-timeout", default=60.0, show_default=True, type=float,
              help="Plugin server socket timeout in seconds (Kong: 60).")
@click.option("--nginx-main-env", "nginx_main_env", multiple=True, metavar="NAME[=VALUE]",
              help="Pass this environment variable to the plugin server, as kong.conf's "
                   "nginx_main_env does (repeatable); it sees only TZ and PATH otherwise.")
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug logs.")
def host_command(
    config_path: str, listen: str, prefix: str | None, plugin_server_cmd: str, query_cmd: str,
    socket_path: str, pdk_plugins_dir: str | None, sample_upstream: str | None,
    rpc_timeout: float, nginx_main_env: tuple[str, ...], verbose: int,
) -> None:
    """Play Kong's side of the external-plugin protocol and serve HTTP on --listen.

    A test and development tool: one process, loopback, no Kong needed.
    """
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    address, port = _address(listen)
    with contextlib.ExitStack() as stack:
        if prefix is None:
            prefix = stack.enter_context(tempfile.TemporaryDirectory(prefix="kong-credits-"))
        Path(prefix).mkdir(parents=True, exist_ok=True)
        if pdk_plugins_dir:
            spec = kong_pdk_server(pdk_plugins_dir, prefix)
        else:
            socket = socket_path.format(prefix=prefix)
            fill = {"prefix": shlex.quote(prefix), "socket": shlex.quote(socket),
                    "socket_name": shlex.quote(Path(socket).name)}
            start = resolve_command(plugin_server_cmd.format(**fill))
            spec = PluginServerSpec("credits", socket, start or None,
                                    resolve_command(query_cmd.format(**fill)))
        upstream_address = _address(sample_upstream) if sample_upstream else None
        try:
            asyncio.run(_serve(config_path, spec, address, port, upstream_address,
                               rpc_timeout, nginx_main_env))
        except (DeclarativeError, HostError, PluginInfoError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc


async def _serve(
    config_path: str, spec: PluginServerSpec, address: str, port: int,
    upstream_address: tuple[str, int] | None, rpc_timeout: float,
    nginx_main_env: tuple[str, ...] = (),
) -> None:
    upstream = SampleUpstream(*upstream_address) if upstream_address else None
    if upstream is not None:
        await upstream.start()
        click.echo(f"sample upstream on {upstream.url}")
    config: Any = config_path
    if upstream is not None:
        # kong.yml names the docker compose upstream: send every service to ours instead.
        config = point_services_at(yaml.safe_load(Path(config_path).read_text()), upstream.url)
    host = Host(config, [spec], rpc_timeout_s=rpc_timeout, listen_port=port,
                nginx_main_env=nginx_main_env)
    server = ProxyServer(host, address, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await host.start()
        await server.start()
        names = ", ".join(sorted(host.plugins)) or "none"
        click.echo(f"kong-credits host on {server.url} (plugins: {names}); Ctrl-C stops")
        await stop.wait()
    finally:
        await server.stop()
        await host.stop()
        if upstream is not None:
            await upstream.stop()
