"""Reading the YAML files operators write (kong.yml, pricing.yaml): one error for all of them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidInput

__all__ = ["read_mapping"]


def read_mapping(path: str | Path, what: str = "file") -> Mapping[str, Any]:
    """The YAML mapping in `path` (an empty file is an empty mapping). InvalidInput, naming
    `what` and the path, when it cannot be read, is not YAML or is not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{path}: expected a mapping (a {what})")
    return data
