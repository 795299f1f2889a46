"""Verifying alert webhooks: the import path the README documents for receivers."""

from .forwarder.alerts import SIGNATURE_HEADER, sign, verify_signature

__all__ = ["SIGNATURE_HEADER", "sign", "verify_signature"]
