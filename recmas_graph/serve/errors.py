"""Errors over HTTP as the OpenAI API shapes them: ``{"error": {"message", "type", "param", "code"}}``.

Every way a request can be wrong (malformed JSON, a missing or wrong-typed field, an unknown model,
a prompt past the context window, a bad sampling value) answers 4xx naming the field; an unexpected
failure answers 500 with a short message and no traceback, and the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RecmasError

__all__ = ["APIError", "error_body", "error_response", "install_error_handlers", "field_of", "from_recmas"]

_log = logging.getLogger("recmas_graph.serve")

#: OpenAI's error type for each status.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout_error"}


class APIError(Exception):
    """A request that fails with ``status`` and an OpenAI error body (``headers``: e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: Mapping[str, str] | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = dict(headers or {})


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:  # noqa: A002
    """The JSON body of an error."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    """The HTTP response of ``err``."""
    return JSONResponse(error_body(err.message, type=err.type, param=err.param, code=err.code), status_code=err.status,
                        headers=err.headers)


def from_recmas(err: RecmasError, *, param: str | None = None) -> APIError:
    """A library error on a request's input as a 400 naming the field (its culprit)."""
    message = err.message + (f" (fix: {err.hint})" if err.hint else "")
    return APIError(400, message, param=param or err.culprit, code="invalid_value")


def field_of(loc: Sequence[Any]) -> str | None:
    """The request field of a validation error's location (``("body", "messages", 0, "role")`` ->
    ``messages[0].role``)."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "union[", "literal[", "list[", "str", "int")):
            continue  # pydantic's names of union members
        else:
            out += f".{part}" if out else str(part)
    return out or None


def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": "invalid"}
    if first.get("type") == "json_invalid":
        return error_response(APIError(400, "the request body is not valid JSON: " + str(first.get("msg", "")),
                                       code="invalid_json"))
    param = field_of(first.get("loc", ()))
    kind = str(first.get("type", ""))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "missing":
        text = f"missing required field {param!r}" if param else "the request body is missing"
        code = "missing_required_parameter"
    else:
        text = f"{param}: {msg}" if param else msg
        code = "invalid_type" if kind.endswith("_type") or "parsing" in kind else "invalid_value"
    more = len(errors) - 1
    if more > 0:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return error_response(APIError(400, text, param=param, code=code))


def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = {404: f"no route {request.method} {request.url.path}; see GET /v1/models and the docs at /docs",
               405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                          str(exc.detail))
    return error_response(APIError(exc.status_code, message, code={404: "not_found", 405: "method_not_allowed"}
                                   .get(exc.status_code), headers=getattr(exc, "headers", None)))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(APIError(500, f"internal error ({type(exc).__name__}); the server keeps serving, see its "
                                        "log", type="server_error", code="internal_error"))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the OpenAI shape."""
    handlers: list[tuple[type[Exception], Any]] = [
        (APIError, lambda request, exc: error_response(exc)),
        (RequestValidationError, _validation),
        (StarletteHTTPException, _http),
        (RecmasError, lambda request, exc: error_response(from_recmas(exc))),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(Exception, _unexpected)
