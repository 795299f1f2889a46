"""Errors as RFC 9457 problem details (`application/problem+json`), written in one place.

Every error the API answers, whether raised by an endpoint (`ProblemError`), by request
validation (422, naming each field), by routing (404, 405) or by Redis being away (503),
leaves through `install`'s handlers with the same shape: `type`, `title`, `status`, `detail`,
plus `errors` (one entry per bad field) on a 422.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..errors import RedisUnavailable

__all__ = ["PROBLEM_JSON", "FieldError", "Problem", "ProblemError", "install", "invalid"]

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("kong_credits.admin")
_UNDECODABLE_BODY = "There was an error parsing the body"
"""FastAPI's 400 when a JSON body cannot be decoded: to the API's callers, a 422 like any
other bad input."""


class FieldError(BaseModel):
    """One invalid input: `field` is its name (a body field, a query or path parameter, or a
    header such as `Idempotency-Key`), `location` where it was (body, query, path, header)."""

    field: str
    location: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raised by an endpoint to answer with a problem: `detail` says what went wrong."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None,
                 errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.errors = errors


def invalid(field: str, message: str, location: str = "body") -> ProblemError:
    """A 422 naming `field`: the message is the engine's (it names the field too)."""
    return ProblemError(422, f"{field}: {message}",
                        errors=[FieldError(field=field, location=location, message=message)])


def problem_response(status: int, detail: str, *, headers: dict[str, str] | None = None,
                     errors: list[FieldError] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase,
                            "status": status, "detail": detail}
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    found = []
    for error in exc.errors():
        where, *path = (str(part) for part in error.get("loc", ()))
        name = ".".join(path) or where
        found.append(FieldError(field=name, location=where, message=error.get("msg", "")))
    return found


def install(app: FastAPI) -> None:
    """Answer every error of `app` as a problem."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.detail, headers=exc.headers, errors=exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid request"
        return problem_response(422, detail, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 400 and detail == _UNDECODABLE_BODY:  # e.g. a huge integer
            return problem_response(422, f"body: {detail}", errors=[FieldError(
                field="body", location="body", message=detail)])
        return problem_response(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        _log.exception("unexpected error", exc_info=exc)
        return problem_response(500, "unexpected error: see the admin process's log")

    @app.exception_handler(RedisUnavailable)
    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        _log.warning("Redis unavailable: %s", type(exc).__name__)
        return problem_response(503, "Redis is unavailable: retry later (a retried grant with the "
                                "same Idempotency-Key or grant_id never grants twice)",
                                headers={"Retry-After": "1"})
