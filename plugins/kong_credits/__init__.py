"""kong-credits: prepaid credits, rate limits and metering for Kong, in one Redis round trip."""

__version__ = "0.1.0"

__all__ = ["__version__"]
