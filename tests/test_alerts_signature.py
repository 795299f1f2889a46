"""verify_signature: whatever a caller sends as the signature header, False, never a raise."""

from __future__ import annotations

import pytest

from kong_credits.alerts import sign, verify_signature

SECRET = "whsec_test"
BODY = b'{"id":"a1"}'
NOW = 1_700_000_000
VALID = sign(SECRET, BODY, NOW)
V1 = VALID.partition("v1=")[2]


@pytest.mark.parametrize("header", [
    None,                              # header missing
    "",
    ",,,",
    f"v1={V1}",                        # no t
    f"t={NOW}",                        # no v1
    f"t=,v1={V1}",
    f"t=soon,v1={V1}",
    f"t= {NOW},v1={V1}",               # int() would take these four
    f"t=+{NOW},v1={V1}",
    f"t=1_700_000_000,v1={V1}",
    f"t={chr(0x661) * 10},v1={V1}",    # Arabic-Indic digits: str.isdigit() takes them
    f"t={NOW},v1={V1[:-1]}é",          # non-ASCII v1: compare_digest raised TypeError
    f"t={NOW},v1=ü" + V1,
    f"t={'9' * 5000},v1={V1}",         # more digits than int() converts
])
def test_malformed_header_is_false(header: str | None) -> None:
    assert verify_signature(SECRET, header, BODY, now_s=NOW) is False


def test_valid_header_still_verifies_with_extra_parts() -> None:
    assert verify_signature(SECRET, VALID, BODY, now_s=NOW)
    assert verify_signature(SECRET, f"{VALID},v0=ignored,v1=00", BODY, now_s=NOW)
