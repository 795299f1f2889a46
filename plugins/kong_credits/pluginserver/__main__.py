"""`python -m kong_credits.pluginserver`: the pluginserver command without the kong-credits CLI."""

from .command import pluginserver_command

pluginserver_command(prog_name="kong-credits pluginserver")
