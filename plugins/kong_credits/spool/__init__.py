"""The spool of `on_redis_error: spool`: requests served while Redis was away, kept on local
disk by the plugin server and charged once Redis answers again.

Architecture: `records` is the line format (one JSON object per request, and one per settled
price of a `credits-metered` request); `segments` owns the files under
`<kong prefix>/credits-spool/<redis>/` (append-only, one locked segment per writing process);
`store` is the per-process writer the plugins append to (size bound, fsync policy) and the
registry of spools; `replay` reads sealed or orphaned segments in order and charges each
record once through authorize.lua's replay mode, in the background at a bounded share of
the process's time; `metrics` counts it for Prometheus; `cli` is `kong-credits spool`.
"""

from .records import SettledPrice, SpooledRequest
from .store import SPOOLS, FsyncPolicy, Spool, SpoolRegistry

__all__ = ["SPOOLS", "FsyncPolicy", "SettledPrice", "Spool", "SpoolRegistry",
           "SpooledRequest"]
