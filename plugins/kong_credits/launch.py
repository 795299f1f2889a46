"""The `kong-credits` console script: an unusable deployment setting exits 2, saying which.

Settings read from the environment at import (`$KONG_CREDITS_SHARDS`, keys.py) fail while
the commands are imported, before click could report them: here that failure becomes one
line on stderr and exit status 2 (click's for bad usage), not a traceback. Every command
refuses alike, the plugin server (Kong's start and query commands), the forwarder and
`alerts` included: none may run with a layout it cannot know.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from .errors import InvalidSetting

__all__ = ["main"]


def main() -> None:
    """Import the command line, then run it (click exits with the command's status)."""
    try:
        from .cli import main as cli_main
    except InvalidSetting as exc:
        _refuse(exc)
    cli_main()


def _refuse(exc: InvalidSetting) -> NoReturn:
    sys.stderr.write(f"Error: {exc}\n")
    raise SystemExit(2)
