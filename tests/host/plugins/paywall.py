"""Test plugin: refuses every request with kong.response.exit (a table or a string body)."""

Schema = (
    {"status": {"type": "integer", "default": 402, "between": [400, 599]}},
    {"body": {"type": "string", "default": "table", "one_of": ["table", "string", "none"]}},
)
version = "0.1.0"
priority = 800


class Plugin:
    def __init__(self, config):
        self.status = config["status"]
        self.body = config["body"]

    def access(self, kong):
        kong.response.set_header("X-Before-Exit", "kept")
        if self.body == "table":
            kong.response.exit(self.status, {"message": "Payment required", "balance": 0},
                               {"X-Balance": "0"})
        elif self.body == "string":
            kong.response.exit(self.status, "no credits left", {"Content-Type": "text/plain"})
        else:
            kong.response.exit(self.status)
