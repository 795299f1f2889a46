"""The `credits-metered` plugin module, for Kong-style plugin directories (`-d plugins/`)."""

from kong_credits.metered_plugin import Plugin, Schema, priority, version

__all__ = ["Plugin", "Schema", "priority", "version"]
