"""The `credits` plugin module, where Kong-style plugin directories expect it (`-d plugins/`)."""

from kong_credits.plugin import EntityChecks, Plugin, Schema, priority, version

__all__ = ["EntityChecks", "Plugin", "Schema", "priority", "version"]
