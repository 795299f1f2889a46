"""The forwarder tests' path to the vendor fakes, which live with the sink tests (their
`spawn` fixture is shared: tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# billing_recorder.py (the loopback billing backend) is shared with tests/sinks.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sinks"))
