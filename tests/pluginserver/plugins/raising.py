"""Test plugin: fails in every way a handler can."""

Schema = []
version = "0.1.0"


class Plugin:
    def __init__(self, config: dict) -> None:
        if config.get("fail_start"):
            raise RuntimeError("bad config")

    async def access(self, kong) -> None:
        raise RuntimeError("boom before any PDK call")

    async def log(self, kong) -> None:
        await kong.request.get_path()
        raise ValueError("boom after a PDK call")

    async def response(self, kong) -> None:
        await kong.response.set_header("X-Set", {1, 2})  # MessagePack cannot encode a set

    async def rewrite(self, kong) -> None:
        kong.request.get_path()  # not awaited: the next call finds it pending
        await kong.request.get_method()
