"""The baseline for our plugin server (`kong-credits pluginserver -d load/plugins/ours`).

The same plugin as `stock/noop_sync.py` in our server's style: one PDK call, then return.
"""

version = "1.0.0"
priority = 900  # where `credits` runs: after key-auth
Schema: list = []


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        await kong.request.get_method()
