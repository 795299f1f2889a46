"""The `credits-metered` plugin module: prices known after the response (plugin.py)."""

from .plugin import MeteredPlugin as Plugin
from .plugin import priority, version
from .schema import plugin_schema

__all__ = ["Plugin", "Schema", "priority", "version"]

Schema = plugin_schema(metered=True)
