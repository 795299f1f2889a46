"""Test plugin: works for `delay_s` before its first PDK call."""

import asyncio

Schema = [{"delay_s": {"type": "number", "default": 0.5}}]
version = "0.3.0"


class Plugin:
    def __init__(self, config: dict) -> None:
        self.delay_s = config.get("delay_s", 0.5)

    async def access(self, kong) -> None:
        await asyncio.sleep(self.delay_s)
        await kong.log.notice("slept")
