"""Test plugin: records the configs of closed instances."""

Schema = [{"tag": {"type": "string"}}]
version = "0.4.0"

CLOSED: list = []


class Plugin:
    def __init__(self, config: dict) -> None:
        self.config = config

    async def access(self, kong) -> None:
        pass

    async def close(self) -> None:
        CLOSED.append(self.config)
