"""Test plugin: access -> response -> log, sharing state through kong.ctx.shared.

access reads the consumer (StepConsumer) and stores it in kong.ctx.shared; response copies
the upstream's X-Units-Used into X-Metered-Units; log writes kong.log.serialize() and the
shared value as one JSON line to `path`.
"""

import json

Schema = ({"path": {"type": "string", "required": True}},)
version = "1.2.3"
priority = 850


class Plugin:
    def __init__(self, config):
        self.path = config["path"]

    def access(self, kong):
        consumer, _ = kong.client.get_consumer()
        kong.ctx.shared.set("meter_consumer", consumer["username"] if consumer else None)

    def response(self, kong):
        units, _ = kong.service.response.get_header("X-Units-Used")
        kong.response.set_header("X-Metered-Units", units or "0")

    def log(self, kong):
        serialized, _ = kong.log.serialize()
        consumer, _ = kong.ctx.shared.get("meter_consumer")
        with open(self.path, "a") as out:
            out.write(json.dumps({"serialize": json.loads(serialized), "consumer": consumer}))
            out.write("\n")
