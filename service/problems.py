"""Errors as ``application/problem+json`` documents (RFC 9457).

Every error the API returns has ``type``, ``title``, ``status`` and
``detail``. Errors about input add ``errors``: one entry per invalid value with
its JSON path (``$.network.populations.exc.tau_mem``, or ``query.t_start`` for
a query parameter), the rule it broke and the value received. Errors about a
limit add ``limit`` (its name), ``maximum`` and ``value``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ember.spec.common import json_path, offending_value

logger = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:ember:problem:"


class Problem(Exception):
    """An error response; raise it anywhere inside a request.

    Args:
        status: the HTTP status code.
        slug: a short, stable name of the error kind, such as ``invalid-spec``;
            it becomes the ``type`` URI ``urn:ember:problem:SLUG``.
        title: a short summary that is the same for every error of the kind.
        detail: a sentence about this occurrence: what failed, on which value,
            and what to do.
        errors: per-value errors, each a dict with ``path``, ``rule``,
            ``message`` and ``value``.
        headers: extra response headers.
        extra: more members of the problem document (``limit``, ``maximum``...).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}
        self.extra = extra

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """Return the problem document as a JSON-ready dict."""
        body: dict[str, Any] = {
            "type": _TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    """Render a problem as a response with the problem+json media type."""
    return JSONResponse(
        _json_safe(problem.document(instance)),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


def not_found(what: str, identifier: str) -> Problem:
    """Build the 404 problem for a missing resource (also used for other users' jobs)."""
    return Problem(404, "not-found", "Not found", f"{what} {identifier!r} was not found")


def invalid_parameter(name: str, rule: str, message: str, value: Any) -> Problem:
    """Build the 422 problem for one invalid query or path parameter."""
    return Problem(
        422,
        "invalid-parameter",
        "Invalid request parameter",
        f"query.{name}: {message}",
        errors=[{"path": f"query.{name}", "rule": rule, "message": message, "value": value}],
    )


def limit_exceeded(status: int, limit: str, maximum: Any, value: Any, detail: str) -> Problem:
    """Build the problem for a request over a service limit (413, 422 or 429)."""
    return Problem(status, "limit-exceeded", "Limit exceeded", detail, limit=limit, maximum=maximum, value=value)


def _parameter_path(loc: Sequence[Any]) -> str:
    if not loc:
        return "$"
    where, rest = loc[0], list(loc[1:])
    if where == "body":
        return json_path([part for part in rest if isinstance(part, (str, int))])
    return ".".join([str(where)] + [str(part) for part in rest])


def _json_safe(value: Any) -> Any:
    """Return ``value`` if JSON can encode it, else its ``repr`` (bytes, objects)."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(key): _json_safe(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [_json_safe(item) for item in value]
        return repr(value)


def validation_problem(error: RequestValidationError) -> Problem:
    """Convert FastAPI's request validation error into a 422 problem with paths."""
    errors = []
    for item in error.errors():
        loc = item.get("loc", ())
        rule = item.get("type", "invalid")
        message = item.get("msg", "invalid value")
        path = _parameter_path(loc)
        if rule == "json_invalid":
            # FastAPI puts the character offset where a JSON path would be.
            reason = (item.get("ctx") or {}).get("error", "")
            offset = loc[-1] if loc and isinstance(loc[-1], int) else None
            where = f" at character {offset}" if offset is not None else ""
            message = f"the request body is not valid JSON{where}: {reason}; send a JSON document".rstrip(": ")
            path = "$"
        elif rule in ("dict_type", "model_attributes_type") and tuple(loc) == ("body",):
            message = f"{message}; send the spec as a JSON object with Content-Type: application/json"
        errors.append(
            {
                "path": path,
                "rule": rule,
                "message": message,
                "value": offending_value(item),
            }
        )
    summary = "; ".join(f"{entry['path']}: {entry['message']}" for entry in errors[:3])
    if len(errors) > 3:
        summary += f"; and {len(errors) - 3} more"
    return Problem(422, "invalid-request", "Invalid request", summary or "the request is invalid", errors=errors)


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, problem: Problem) -> JSONResponse:
        return problem_response(problem, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(error), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(error.status_code, "http-error")
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no route matches {request.method} {request.url.path}"
        problem = Problem(error.status_code, slug, _title(error.status_code), detail, headers=dict(error.headers or {}))
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem(
            500, "internal-error", "Internal server error", "the server failed to handle the request; see its log"
        )
        return problem_response(problem, request.url.path)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
