"""Test plugin: misbehaves in the way `mode` says, to exercise Kong's error paths."""

Schema = (
    {"mode": {"type": "string", "required": True,
              "one_of": ["pdk_raise", "raise_after_call", "unknown_method", "exit_in_log",
                         "live_in_log"]}},
)
version = "0.1.0"
priority = 700


class Plugin:
    def __init__(self, config):
        self.mode = config["mode"]

    def access(self, kong):
        if self.mode == "pdk_raise":
            kong.response.get_status()  # not allowed in access: Kong raises, no Step
        elif self.mode == "raise_after_call":
            kong.request.get_method()
            raise RuntimeError("plugin bug")  # never answered: Kong waits, then "no data"
        elif self.mode == "unknown_method":
            data, _ = kong.nonexistent.method("x")
            kong.response.set_header("X-Unknown-Data", repr(data))

    def log(self, kong):
        if self.mode == "exit_in_log":
            kong.response.exit(500, "too late")
        elif self.mode == "live_in_log":
            kong.request.get_method()  # ngx.req is disabled in Kong's log timer
