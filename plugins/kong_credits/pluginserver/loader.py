"""Load plugin modules (kong-pdk conventions) and describe them as Kong's query_cmd expects."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import InvalidSetting
from .errors import PluginLoadError

__all__ = ["PHASES", "PluginModule", "import_plugin", "load_directory", "load_file", "load_plugins"]

logger = logging.getLogger(__name__)

PHASES = ("certificate", "rewrite", "log", "access", "preread", "response")
"""Phases kong-pdk offers, in kong-pdk's order (it decides the order of `Phases`)."""

_FILE_MODULE_PREFIX = "_kong_plugin_"
"""sys.modules prefix for -d files: kong-pdk registers bare names, so a plugin file named
json.py would replace the json module for the whole process."""


@dataclass(slots=True)
class PluginModule:
    """A loaded plugin: its Plugin class and what Kong's query_cmd reports about it."""

    name: str
    cls: type
    phases: list[str]
    priority: int
    version: str | None
    schema: list[Any]
    mtime: float
    load_time: float = field(default_factory=time.time)
    last_start_instance_time: float = 0
    last_close_instance_time: float = 0

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> PluginModule:
        """Read the kong-pdk contract: Plugin, Schema, version, priority (default 0)."""
        plugin = getattr(module, "Plugin", None)
        if not isinstance(plugin, type):
            raise PluginLoadError(f"plugin {name!r} ({module.__name__}) has no class Plugin")
        version = getattr(module, "version", None)
        if version is None:
            logger.warning("plugin %r has no version: Kong refuses plugins without one", name)
        path = getattr(module, "__file__", None)
        return cls(
            name=name,
            cls=plugin,
            phases=[phase for phase in PHASES if hasattr(plugin, phase)],
            priority=getattr(module, "priority", 0),
            version=version,
            schema=getattr(module, "Schema", []),
            mtime=os.stat(path).st_mtime if path else 0,
        )

    def info(self) -> dict[str, Any]:
        """The entry --dump-all-plugins prints, shaped exactly like kong-pdk's get_plugin_info."""
        return {
            "Name": self.name,
            "Phases": self.phases,
            "Priority": self.priority,
            "Version": self.version,
            "Schema": {
                "name": self.name,
                "fields": [{"config": {"type": "record", "fields": self.schema}}],
            },
        }


def load_file(path: str | os.PathLike[str]) -> PluginModule:
    """Load one plugin file, named after the file (kong-pdk's -d convention)."""
    path = Path(path)
    name = path.stem
    spec = importlib.util.spec_from_file_location(_FILE_MODULE_PREFIX + name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot load plugin {name!r} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before exec: dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[spec.name]
        raise PluginLoadError(f"cannot load plugin {name!r} from {path}: {exc}") from exc
    return PluginModule.from_module(name, module)


def load_directory(directory: str | os.PathLike[str]) -> list[PluginModule]:
    """Every `*.py` in directory, sorted by name, skipping `_`-prefixed files and directories.

    As kong-pdk does, a file that fails to load is logged and skipped, so one broken file does
    not take the others down (Kong then reports the missing plugin by name); but an unusable
    deployment setting (InvalidSetting) stops the load: no plugin of ours could run.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PluginLoadError(f"plugin directory {directory} does not exist")
    plugins = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_") or not path.is_file():
            continue
        try:
            plugins.append(load_file(path))
        except PluginLoadError as exc:
            if isinstance(exc.__cause__, InvalidSetting):  # every plugin would fail alike
                raise
            logger.warning("%s", exc)
    return plugins


def import_plugin(spec: str) -> PluginModule:
    """Import `package.module` (named after its last component) or `name=package.module`."""
    name, sep, dotted = spec.partition("=")
    if not sep:
        dotted, name = spec, spec.rpartition(".")[2]
    try:
        module = importlib.import_module(dotted)
    except Exception as exc:
        raise PluginLoadError(
            f"cannot import plugin module {dotted} (plugin {name!r}): {type(exc).__name__}: {exc}"
        ) from exc
    return PluginModule.from_module(name, module)


def load_plugins(
    directories: tuple[str, ...] | list[str] = (), modules: tuple[str, ...] | list[str] = ()
) -> list[PluginModule]:
    """Plugins from directories, then modules; a name loaded twice is an error."""
    plugins = [p for d in directories for p in load_directory(d)]
    plugins += [import_plugin(spec) for spec in modules]
    seen: set[str] = set()
    for plugin in plugins:
        if plugin.name in seen:
            raise PluginLoadError(f"plugin name {plugin.name!r} is loaded twice")
        seen.add(plugin.name)
    return plugins
