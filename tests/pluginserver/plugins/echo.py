"""Test plugin: echoes what Kong answered back in its next PDK call."""

Schema = [{"header": {"type": "string", "default": "X-Echo"}}]
version = "1.2.3"
priority = 7


class Plugin:
    def __init__(self, config: dict) -> None:
        self.header = config.get("header", "X-Echo")
        if config.get("quiet"):
            self.log = None  # this instance has nothing to do in log

    async def access(self, kong) -> None:
        value = await kong.request.get_header("x-input")
        await kong.response.set_header(self.header, value)

    async def log(self, kong) -> None:
        await kong.log.info("done", 1, 2.5, None)
