"""Test plugin: a schema with most Kong field kinds, to exercise config validation."""

Schema = (
    {"cost": {"type": "integer", "required": True, "between": [0, 1000]}},
    {"mode": {"type": "string", "default": "enforce", "one_of": ["enforce", "shadow"]}},
    {"rate": {"type": "number", "gt": 0}},
    {"limits": {"type": "record", "required": True, "fields": [
        {"minute": {"type": "integer", "default": 60, "gt": 0}},
        {"burst": {"type": "integer"}},
    ]}},
    {"tags": {"type": "array", "elements": {"type": "string"}, "default": []}},
    {"headers": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}}},
)
version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        kong.response.set_header("X-Strict-Cost", str(self.config["cost"]))
