"""The usage store: every admitted request, queryable by wallet, endpoint, method and time.

The forwarder's `usage` sink (`kong_credits.sinks.usage`) writes each rated event once, by
its event id, into raw events and per-minute rollups with their hour and day totals
(`store`, `schema`); `query` answers `kong-credits usage`, the admin API and the dashboard
from them; `retention` prunes each level in small batches. SQLite for one machine,
PostgreSQL for several writers and readers: the same schema and the same SQL on both.
"""

from .query import usage_events, usage_report
from .retention import Retention
from .store import DEFAULT_USAGE_URL, USAGE_URL_ENV, Store, StoreError, open_store
from .times import parse_time

__all__ = ["DEFAULT_USAGE_URL", "USAGE_URL_ENV", "Retention", "Store", "StoreError",
           "open_store", "parse_time", "usage_events", "usage_report"]
