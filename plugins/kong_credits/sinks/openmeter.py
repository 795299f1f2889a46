"""OpenMeter: the CloudEvents batch to POST /api/v1/events (204 No Content on success).

Authentication is `Authorization: Bearer <API token>` on OpenMeter Cloud; a self-hosted
OpenMeter usually needs none. OpenMeter deduplicates on CloudEvents `id` + `source`.
"""

from __future__ import annotations

from .http import HttpSink

__all__ = ["OpenMeterSink"]


class OpenMeterSink(HttpSink):
    name = "openmeter"
    max_batch = 500
    default_url = "https://openmeter.cloud"
    path = "/api/v1/events"
