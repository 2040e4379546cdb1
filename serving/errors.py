"""Errors as the API returns them: `{"error": {"code", "message", "details", "request_id"}}`, a 4xx for
anything the caller can fix, and never a stack trace or a server path (those go to the log only)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.schemas import ErrorResponse

log = logging.getLogger("recsys.errors")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "not_ready",
}
DESCRIPTIONS = {
    400: "Malformed request (the body is not valid JSON)",
    401: "The admin key is missing",
    403: "The admin key is wrong, or no admin key is configured",
    404: "Unknown route or item",
    409: "The bundle was refused or lacks what the route needs, or an event_id was reused with another payload",
    413: "The body is larger than the configured limit",
    415: "The body is not sent as JSON (Content-Type: application/json)",
    422: "The request does not match the schema (types, ranges, required fields)",
    429: "Too many requests of this kind are being served: retry after the Retry-After seconds",
    503: "No verified bundle is loaded yet, or the journal is unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.headers = headers


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's error statuses, all with the ErrorResponse body."""
    return {status: {"model": ErrorResponse, "description": DESCRIPTIONS[status]} for status in statuses}


def error_response(
    request_id: str | None,
    status: int,
    message: str,
    code: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code or CODES.get(status, "error"),
            "message": message,
            "details": details or [],
            "request_id": request_id,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _location(loc: tuple | list) -> str:
    return ".".join(str(part) for part in loc) or "request"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        error = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(_request_id(request), 400, f"the body is not valid JSON: {reason}", "malformed_json")
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors) and not _is_json(request):
        got = request.headers.get("content-type") or "none"
        return error_response(
            _request_id(request), 415, f"send the body as JSON with Content-Type: application/json (got {got[:100]})"
        )
    # The input values are left out on purpose: they can be large, and they are the caller's own.
    details = [
        {"field": _location(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e.get("type")} for e in errors
    ]
    first = details[0] if details else {"field": "request", "message": "invalid"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return error_response(_request_id(request), 422, f"{first['field']}: {first['message']}{more}", details=details)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message = "no such route (see /docs for the API)"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on this route"
    else:
        message = str(exc.detail) if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error")
    return error_response(_request_id(request), exc.status_code, message, headers=getattr(exc, "headers", None))


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(_request_id(request), exc.status, exc.message, exc.code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"fields": {"request_id": _request_id(request), "path": request.url.path}},
    )
    return error_response(_request_id(request), 500, "internal error (logged with this request id)", "internal")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Exception, _unexpected)
