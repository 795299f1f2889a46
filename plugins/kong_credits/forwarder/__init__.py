"""The forwarder and what it is made of: rated events from the Redis streams to the sinks.

- `loop`: the delivery loop (`Forwarder`), at least once, deduplicated by event id downstream;
- `consumer_group`: reading, claiming and acknowledging stream entries;
- `dlq`: dead letters and their replay; `lapsed_holds`: settling holds Kong never settled;
- `metrics`: Prometheus counters; `group_names`: the consumer group of each sink kind;
- `alerts`, `alerts_cli`: the alert streams to signed webhooks;
- `cli`: the `forwarder` and `dlq` commands (`python -m kong_credits.forwarder.cli`).
The sinks themselves live in `kong_credits.sinks`.
"""

from .loop import DEFAULT_RETAIN_MS, REDIS_ERRORS, Forwarder, ForwarderOptions

__all__ = ["DEFAULT_RETAIN_MS", "REDIS_ERRORS", "Forwarder", "ForwarderOptions"]
