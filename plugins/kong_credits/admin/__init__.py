"""The admin HTTP API (FastAPI): one router per resource, served by `kong-credits admin`."""
