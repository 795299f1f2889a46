"""decK's names for what `deck file openapi2kong` generates (go-apiops `openapitools/utils.go`
and `openapi2kong.go`): slugs, regex capture names, route names and ids."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput

__all__ = ["capture_name", "entity_id", "kong_name", "operation_route_name", "slugify"]

_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe",
                       "Œ": "OE", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "þ": "th",
                       "Þ": "Th", "ð": "d", "Ð": "D", "\u0131": "i"})


def _ascii(text: str) -> str:
    """Latin letters without their accents. decK transliterates other scripts (unidecode:
    "Привет" -> "Privet"); rather than name routes differently, such a name is refused."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    for char in decomposed:
        if not char.isascii() and unicodedata.category(char).startswith(("L", "N")):
            raise InvalidInput(f"{text!r}: decK transliterates {char!r} to ASCII in names; "
                               "give an ASCII x-kong-name (or operationId) so that both "
                               "name the routes alike")
    return decomposed.encode("ascii", "ignore").decode()


def _slug(text: str, separator: str) -> str:
    """go-slugify with `separator` as word separator and invalid-character replacement."""
    text = separator.join(_ascii(text).split())
    text = re.sub(rf"[^{re.escape(separator)}a-zA-Z0-9]", separator, text)
    text = re.sub(rf"{re.escape(separator)}{{2,}}", separator, text)
    return text.strip(separator).lower()


def slugify(name: str) -> str:
    """decK's entity-name slug: `Simple API overview` -> `simple-api-overview`."""
    return _slug(name, "-")


def capture_name(parameter: str) -> str:
    """decK's regex capture name for a path parameter: `-To_Do` -> `to_do`."""
    return _slug(parameter, "_")


def operation_route_name(doc_name: str, path_name: str, operation: Mapping[str, Any],
                         method: str) -> str:
    """The route decK names for one operation (`method` upper-case)."""
    own = kong_name(operation, f"{method} operation")
    if own:
        return f"{path_name}_{slugify(own)}"
    if operation.get("operationId"):
        return f"{doc_name}_{slugify(str(operation['operationId']))}"
    return f"{path_name}_{slugify(method)}"


def kong_name(holder: Mapping[str, Any], where: str) -> str:
    name = holder.get("x-kong-name")
    if name is None:
        return ""
    if not isinstance(name, str):
        raise InvalidInput(f"{where}: expected 'x-kong-name' to be a string")
    return name


def entity_id(name: str) -> str:
    """decK's id of an entity: UUIDv5 of `name` in the DNS namespace."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
