"""The FastAPI application factory.

``create_app()`` reads the settings from the environment; tests pass their
own settings, limits and dispatcher. The app does not migrate the database:
``ember serve`` and ``ember db upgrade`` do. Run it alone with
``uvicorn service.app:create_app --factory``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ember.spec import JobSpec, Limits
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import ServiceContext
from service.api.routes import events, health, jobs, results, sweeps
from service.auth import LOCAL_USER, get_or_create_user
from service.config import Settings, get_settings
from service.db.session import make_engine, make_session_factory, transaction
from service.jobs import Dispatcher
from service.metrics import ServiceMetrics
from service.problems import MEDIA_TYPE, Problem

logger = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Reject request bodies above ``max_bytes`` with 413 before the app reads them.

    A declared ``Content-Length`` above the limit is rejected at once. A
    chunked body is read until it passes the limit, and then rejected.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False
            if too_large:
                await self._reject(send, int(declared))
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._reject(send, len(body))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        problem = Problem(
            413,
            "limit-exceeded",
            "Limit exceeded",
            f"the request body has {size:,} bytes or more, above the limit of {self.max_bytes:,} (EMBER_MAX_BODY_BYTES)",
            limit="max_body_bytes",
            maximum=self.max_bytes,
            value=size,
        )
        payload = json.dumps(problem.document()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(payload)).encode()), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class RequestMetricsMiddleware:
    """Count requests and their latency per route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - started)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """Build the OpenAPI document with the JobSpec schema among the components."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in spec_schema.pop("$defs", {}).items():
        components.setdefault(name, schema)
    components["JobSpec"] = spec_schema
    for path, method in jobs.SPEC_BODY_ROUTES:
        content = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        content["schema"] = {"$ref": "#/components/schemas/JobSpec"}
    app.openapi_schema = document
    return document


def ensure_local_user(factory: Any) -> None:
    """Create the admin user ``local`` that requests act as while authentication is off."""
    with transaction(factory) as session:
        get_or_create_user(session, LOCAL_USER, is_admin=True)


def create_app(
    settings: Settings | None = None,
    *,
    limits: Limits | None = None,
    dispatcher: Dispatcher | None = None,
    engine: Engine | None = None,
) -> FastAPI:
    """Build the API application.

    Args:
        settings: the settings; read from ``EMBER_*`` variables by default.
        limits: the network size limits; read from ``EMBER_MAX_*`` by default.
        dispatcher: sends job ids to workers; by default a Celery
            application on ``settings.broker_url``.
        engine: the database engine; by default one for ``settings.database_url``.

    Returns:
        The FastAPI application. The database must already be migrated.

    Raises:
        ValueError: if ``settings.host`` is not a loopback address while
            authentication is off.
    """
    settings = settings or get_settings()
    # Checked here too, for `uvicorn service.app:create_app --factory`.
    settings.check_bind()
    limits = limits or Limits()
    engine = engine or make_engine(settings.database_url)
    factory = make_session_factory(engine)
    extras: dict[str, object] = {}
    if dispatcher is None:
        from worker.celery_app import CeleryDispatcher, make_celery

        celery_app = make_celery(settings)
        extras["celery"] = celery_app
        dispatcher = CeleryDispatcher(celery_app)
    metrics = ServiceMetrics(factory, worker_timeout_s=3 * settings.heartbeat_interval_s)
    extras["metrics"] = metrics
    context = ServiceContext(settings=settings, limits=limits, engine=engine, factory=factory, dispatcher=dispatcher, extras=extras)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_enabled:
            ensure_local_user(factory)
        logger.info("API ready (database %s, auth %s)", engine.url.render_as_string(hide_password=True), "on" if settings.auth_enabled else "off")
        yield
        logger.info("API stopping")

    app = FastAPI(
        title="Ember job service",
        version="1.0",
        description="Submit spiking network jobs, follow their progress and read their results. "
        "Errors are application/problem+json documents with the JSON path of each invalid value.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.context = context
    from service.problems import install_handlers

    install_handlers(app)
    for module in (jobs, events, results, sweeps, health):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
