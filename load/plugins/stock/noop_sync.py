"""The baseline for stock kong-pdk (`kong-python-pluginserver -g -d load/plugins/stock`).

One PDK call and return: the cheapest access phase a plugin can have, sync as kong-pdk wants.
"""

version = "1.0.0"
priority = 900  # where `credits` runs: after key-auth
Schema: list = []


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        kong.request.get_method()
