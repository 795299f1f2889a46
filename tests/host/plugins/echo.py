"""Test plugin: echoes a request header into response and upstream headers (2 PDK calls)."""

Schema = ({"message": {"type": "string", "default": "hello"}},)
version = "0.1.0"
priority = 900


class Plugin:
    def __init__(self, config):
        self.message = config["message"]

    def access(self, kong):
        value, _ = kong.request.get_header("x-echo")
        kong.response.set_headers({"X-Echo": value or "none", "X-Echo-Message": self.message})
