"""Errors of the server, one tree, and the JSON error handlers. Every error response has the shape
{"error": {"code": str, "message": str, "details": any}}; bad input is a 4xx, never a 500.

    ServeError
    ├── SourceUnavailable       the graph source (store) failed: the last index keeps serving
    └── ApiError                a request cannot be answered (carries status + stable code)
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

ErrorCode = str
"""Stable codes: bad_request, invalid_parameter, invalid_body, cart_too_large, unknown_product,
not_found, method_not_allowed, unauthorized, payload_too_large, not_ready, source_unavailable,
internal_error."""


class ServeError(Exception):
    """Base of every error the server raises on purpose."""


class SourceUnavailable(ServeError):
    """The store could not be read (down, nothing published, corrupt version)."""


class ApiError(ServeError):
    def __init__(self, status: int, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: ErrorCode, message: str, details: Any = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


_HTTP_CODES: dict[int, ErrorCode] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "bad_request",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
        details = None
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:
            details = {"allowed": sorted(allowed)}
        response = error_response(status, code, exc.description or exc.name, details)
        if status == 405 and details:
            response.headers["Allow"] = ", ".join(details["allowed"])
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
