"""Exceptions of the plugin server.

PluginServerError     answered to Kong as the RPC error string (never crosses the socket as
 |                    anything else)
 +-- ProtocolError    the peer did not speak MessagePack-RPC: the connection is closed
PluginLoadError       a plugin module could not be imported or is not a plugin
PDKError              raised inside a phase handler for a misused `kong` object
 +-- EventFinished    the event is over: Kong will answer no more PDK calls for it
"""

from __future__ import annotations

__all__ = ["EventFinished", "PDKError", "PluginLoadError", "PluginServerError", "ProtocolError"]


class PluginServerError(Exception):
    """An RPC failed; str(exc) is the error string Kong receives (it matches on some texts)."""


class ProtocolError(PluginServerError):
    """A message that is not a MessagePack-RPC request: nothing sensible can be answered."""


class PluginLoadError(Exception):
    """A plugin module could not be loaded (import failed, no Plugin class, duplicate name)."""


class PDKError(Exception):
    """A PDK call could not be made from this handler."""


class EventFinished(PDKError):
    """A PDK call after kong.response.exit/error, or after the event expired: Kong is gone."""
