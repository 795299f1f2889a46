"""The OpenAPI 3.1 document: every error an endpoint can answer, as problem details.

Routes declare their errors with `errors(401, 403, ...)`; `document` then gives each of them
the `Problem` schema under `application/problem+json` (FastAPI's own 422 schema included), so
`/openapi.json` describes exactly what the handlers in problems.py send.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .problems import PROBLEM_JSON, FieldError, Problem

__all__ = ["document", "errors"]

_WHY = {
    401: "No bearer token, or one that is unknown or revoked.",
    403: "A valid token outside its scope (a wallet token reads only its own wallet).",
    404: "No such resource.",
    409: "The idempotency key was used before with a different request.",
    413: "The body is too large.",
    422: "Invalid input: `errors` names each field.",
    503: "Redis (or the usage store) is unavailable.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses (their schema is added by `document`)."""
    return {code: {"description": _WHY.get(code, HTTPStatus(code).phrase)} for code in codes}


def _problem_schema(components: dict[str, Any]) -> dict[str, Any]:
    schemas = components.setdefault("schemas", {})
    for model in (Problem, FieldError):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[model.__name__] = schema
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return {"$ref": "#/components/schemas/Problem"}


def document(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi`: FastAPI's document with every 4xx/5xx answered as a problem."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes, tags=app.openapi_tags)
        ref = _problem_schema(spec.setdefault("components", {}))
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    if str(status)[0] in "45":
                        response["content"] = {PROBLEM_JSON: {"schema": ref}}
        app.openapi_schema = spec
        return spec

    return build
