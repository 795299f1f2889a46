"""Test plugin: ends events with kong.response.exit/error, then misbehaves as configured."""

import asyncio

Schema = [{"after": {"type": "string", "one_of": ["return", "call", "sleep"]}}]
version = "0.2.0"
priority = 1000


class Plugin:
    def __init__(self, config: dict) -> None:
        self.after = config.get("after", "return")

    async def access(self, kong) -> None:
        result = await kong.response.exit(403, {"message": "no"}, {"X-Why": "test"})
        assert result is None
        if self.after == "call":
            await kong.log.err("too late")  # raises EventFinished: the event is over
        elif self.after == "sleep":
            await asyncio.sleep(0.05)

    async def response(self, kong) -> None:
        status = await kong.response.get_status()
        await kong.response.error(status, "replaced")

    def rewrite(self, kong) -> None:  # a plain function: exit needs no await
        kong.response.error(429, "slow down")
