"""`kong-credits pluginserver`: kong-pdk's command line, serving async plugins on asyncio."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

import click
from prometheus_client import CollectorRegistry

from .. import __version__
from ..errors import InvalidSetting
from ..pluginserver_metrics import METRICS, WorkerSums, serve
from ..spool import SPOOLS
from .errors import PluginLoadError, PluginServerError
from .loader import load_plugins
from .rpc import PluginServer
from .workers import default_workers, run_workers

__all__ = [
    "DEFAULT_MODULES",
    "DEFAULT_PREFIX",
    "DEFAULT_SOCKET_NAME",
    "make_command",
    "pluginserver_command",
]

DEFAULT_MODULES = ("credits=kong_credits.plugin", "credits-metered=kong_credits.metered_plugin")
"""Served when neither -d nor -m is given: the built-in plugins, named as Kong knows them."""

DEFAULT_PREFIX = "/usr/local/kong/"
DEFAULT_SOCKET_NAME = "credits.socket"
"""Kong 3.9+ looks for <prefix>/<pluginserver name>.socket by default."""

_LOG_FORMAT = "%(levelname)-4s - [%(asctime)s] %(name)s: %(message)s"


def make_command(default_modules: Sequence[str] = DEFAULT_MODULES) -> click.Command:
    """Build the command; tests and other packages may serve different default plugins."""

    @click.command(name="pluginserver", context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(
        __version__, "--version", "-version", prog_name="kong-credits pluginserver"
    )
    @click.option(
        "-p",
        "--kong-prefix",
        "-kong-prefix",
        "prefix",
        default=DEFAULT_PREFIX,
        show_default=True,
        help="Directory of the unix socket (Kong's prefix).",
    )
    @click.option(
        "--socket-name",
        default=DEFAULT_SOCKET_NAME,
        show_default=True,
        help="Socket file name inside the prefix.",
    )
    @click.option(
        "-d",
        "--plugins-directory",
        "-plugins-directory",
        "directories",
        multiple=True,
        help="Load every *.py here as a plugin named after the file (repeatable).",
    )
    @click.option(
        "-m",
        "--module",
        "modules",
        multiple=True,
        help="Import a plugin module: pkg.mod (named mod) or name=pkg.mod (repeatable). "
        f"Default without -d/-m: {', '.join(default_modules)}.",
    )
    @click.option("-v", "--verbose", count=True, help="Log more (-v: debug).")
    @click.option(
        "--dump-all-plugins",
        "-dump-all-plugins",
        "--dump",
        "-dump",
        "dump_all",
        is_flag=True,
        help="Print the JSON list Kong's query_cmd expects and exit.",
    )
    @click.option(
        "--first",
        metavar="NAME",
        help="With --dump-all-plugins: list plugin NAME first. Kong 3.9+ registers only the "
        "first plugin a query_cmd prints, so each pluginserver_<name>_query_cmd names its own.",
    )
    @click.option(
        "--dump-plugin-info",
        "-dump-plugin-info",
        "dump_name",
        metavar="NAME",
        help="Print one plugin's info as JSON and exit.",
    )
    @click.option(
        "--event-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        help="Drop an event (and cancel its handler) after this many "
        "seconds without a message from Kong (Kong's own socket timeout is 60 s).",
    )
    @click.option(
        "--listen-queue-size",
        type=click.IntRange(min=1),
        default=4096,
        show_default=True,
        help="Listen backlog of the socket.",
    )
    @click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Server processes behind the socket, each serving whole nginx workers "
        "(default: the number of usable cores). 1: a single process, no handover.",
    )
    @click.option(
        "--metrics-port",
        type=click.IntRange(min=0, max=65535),
        default=None,
        help="Serve Prometheus metrics (decisions, Redis latency and errors, cluster "
        "redirections, reconnects, events in flight) on this port, at --metrics-host; 0 "
        "picks a free port. With several --workers: their sum, at most 1 s behind.",
    )
    @click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="Address the metrics endpoint listens on.",
    )
    @click.option(
        "--no-lua-style",
        is_flag=True,
        hidden=True,
        help="Accepted for kong-pdk compatibility: PDK calls always return plain values.",
    )
    @click.option(
        "-g",
        "--gevent",
        is_flag=True,
        hidden=True,
        help="Accepted for kong-pdk compatibility: the server always runs on asyncio.",
    )
    def pluginserver(
        prefix: str,
        socket_name: str,
        directories: tuple[str, ...],
        modules: tuple[str, ...],
        verbose: int,
        dump_all: bool,
        first: str | None,
        dump_name: str | None,
        event_timeout: float,
        listen_queue_size: int,
        workers: int | None,
        metrics_port: int | None,
        metrics_host: str,
        no_lua_style: bool,
        gevent: bool,
    ) -> None:
        """Run Kong external plugins (async kong-pdk style) over Kong's MessagePack-RPC socket.

        Unlike kong-pdk, -m names a plugin module (there is no multiprocessing mode),
        -g and --no-lua-style are accepted and ignored.
        """
        _configure_logging(verbose)
        if not directories and not modules:
            modules = tuple(default_modules)
        try:
            plugins = load_plugins(directories, modules)
        except PluginLoadError as exc:
            if isinstance(exc.__cause__, InvalidSetting):  # $KONG_CREDITS_SHARDS
                raise _UnusableSetting(str(exc.__cause__)) from None
            raise click.ClickException(str(exc)) from exc
        if dump_all:
            if first is not None:
                if first not in {p.name for p in plugins}:
                    raise click.ClickException(f"no plugin named {first!r}")
                plugins.sort(key=lambda p: p.name != first)
            sys.stdout.write(json.dumps([plugin.info() for plugin in plugins]))
            return
        if dump_name is not None:
            plugin = next((p for p in plugins if p.name == dump_name), None)
            if plugin is None:
                raise click.ClickException(f"no plugin named {dump_name!r}")
            sys.stdout.write(json.dumps(plugin.info()))
            return
        if not os.path.isdir(prefix):
            raise click.ClickException(f"path {prefix} doesn't exist, can't create the socket")
        workers = workers or default_workers()
        SPOOLS.configure(prefix)  # on_redis_error=spool writes under <prefix>/credits-spool
        with contextlib.ExitStack() as cleanup:
            # --workers N: each worker publishes its counts here, the parent sums them.
            published = (cleanup.enter_context(tempfile.TemporaryDirectory(
                prefix="kong-credits-metrics-")) if metrics_port is not None and workers > 1
                else None)

            def make_rpc() -> PluginServer:
                server = PluginServer(plugins, event_timeout_s=event_timeout)
                METRICS.watch_events(server.events)
                if published is not None:  # in a worker process, just forked
                    METRICS.publish(published)
                return server

            if metrics_port is not None:
                _serve_metrics(metrics_port, metrics_host, published)
            try:
                run_workers(make_rpc, os.path.join(prefix, socket_name), workers=workers,
                            backlog=listen_queue_size)
            except PluginServerError as exc:
                raise click.ClickException(str(exc)) from exc

    return pluginserver


class _UnusableSetting(click.ClickException):
    """One line and exit 2, as launch.py answers an unusable setting for every command."""

    exit_code = 2


def _serve_metrics(port: int, host: str, published: str | None) -> None:
    """/metrics of this process's METRICS, or with workers the sum of what they publish."""
    if published is None:
        registry = METRICS.registry
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerSums(published))
    try:
        bound, _stop = serve(registry, port, host)
    except OSError as exc:
        raise click.ClickException(f"can't serve metrics on {host}:{port}: {exc}") from exc
    logging.getLogger("kong_credits.pluginserver").info(
        "metrics on http://%s:%d/metrics", host, bound)


def _configure_logging(verbose: int) -> None:
    """Everything to stderr (stdout carries --dump output; Kong logs both of a start_cmd).

    kong_credits logs INFO (DEBUG with -v), like kong-pdk; other libraries WARNING and up.
    """
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format=_LOG_FORMAT, datefmt="%X")
    logging.getLogger("kong_credits").setLevel(logging.DEBUG if verbose else logging.INFO)


pluginserver_command = make_command()
