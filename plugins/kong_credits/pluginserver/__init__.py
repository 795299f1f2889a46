"""Kong external-plugin server on asyncio: async kong-pdk plugins over Kong's MessagePack-RPC.

Architecture (one job per module):
    loader.py     plugin modules (kong-pdk contract) and their --dump-all-plugins info
    pdk.py        the `kong` object handed to phase handlers
    events.py     one task per event, state keyed by EventId, idle-timeout sweep
    instances.py  Plugin(config) per StartInstance
    rpc.py        the plugin.* methods; the one border where failures become error strings
    wire.py       MessagePack framing
    server.py     unix-socket listener, a Protocol per connection; signals
    workers.py    --workers N: a parent that accepts and hands each nginx worker's
                  connections to one of N forked processes
    command.py    the `kong-credits pluginserver` click command

Writing a plugin:
    Schema = [{"greeting": {"type": "string", "default": "hi"}}]
    version = "1.0.0"
    priority = 10

    class Plugin:
        def __init__(self, config: dict) -> None:
            self.greeting = config["greeting"]

        async def access(self, kong: Kong) -> None:
            consumer = await kong.client.get_consumer()
            if consumer is None:
                return await kong.response.exit(401, {"message": "who are you?"})
            await kong.response.set_header("X-Greeting", self.greeting)

An instance with nothing to do in one of its plugin's phases for its config sets that
attribute to None in `__init__` (`self.log = None`): Kong still sends the event, and the
server answers "ret" at once without running anything.
"""

from .command import DEFAULT_MODULES, DEFAULT_SOCKET_NAME, make_command, pluginserver_command
from .errors import EventFinished, PDKError, PluginLoadError, PluginServerError, ProtocolError
from .events import TERMINAL_METHODS
from .loader import PHASES, PluginModule, import_plugin, load_directory, load_file, load_plugins
from .pdk import Kong
from .rpc import PluginServer
from .server import Listener, run, serve

__all__ = [
    "DEFAULT_MODULES",
    "DEFAULT_SOCKET_NAME",
    "PHASES",
    "TERMINAL_METHODS",
    "EventFinished",
    "Kong",
    "Listener",
    "PDKError",
    "PluginLoadError",
    "PluginModule",
    "PluginServer",
    "PluginServerError",
    "ProtocolError",
    "import_plugin",
    "load_directory",
    "load_file",
    "load_plugins",
    "make_command",
    "pluginserver_command",
    "run",
    "serve",
]
