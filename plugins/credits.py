"""The `credits` plugin module, where Kong-style plugin directories expect it (`-d plugins/`)."""

from kong_credits.plugin import Plugin, Schema, priority, version

__all__ = ["Plugin", "Schema", "priority", "version"]
