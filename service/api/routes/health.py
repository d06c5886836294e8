"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import ContextDep
from service.metrics import live_workers
from service.schemas import Health

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """Return 200 while the process serves requests; checks no dependency."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness", responses={503: {"model": Health}})
def readyz(context: ContextDep) -> JSONResponse:
    """Return 200 when the database and the broker respond and every required queue has a live worker.

    A worker counts as live when it wrote a heartbeat within three heartbeat
    intervals. The required queues are ``EMBER_READY_QUEUES``.
    """
    checks: dict[str, str] = {}
    live: dict[str, int] = {}
    try:
        with context.factory() as session:
            session.execute(text("SELECT 1"))
            live = live_workers(session, 3 * context.settings.heartbeat_interval_s)
        checks["database"] = "ok"
    except SQLAlchemyError as error:
        logger.warning("readiness: the database failed: %s", error)
        checks["database"] = f"failed: {type(error).__name__}"
    checks["broker"] = _check_broker(context)
    for queue in context.settings.queue_list:
        count = live.get(queue, 0)
        checks[f"workers:{queue}"] = f"ok ({count})" if count else "failed: no live worker"
    ready = all(value.startswith("ok") for value in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _check_broker(context: ContextDep) -> str:
    celery_app = context.extras.get("celery")
    if celery_app is None:
        return "ok (no broker in use)"
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as error:  # kombu raises transport-specific errors
        logger.warning("readiness: the broker failed: %s", error)
        return f"failed: {type(error).__name__}"


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(context: ContextDep) -> Response:
    """Return the metrics in the Prometheus text format."""
    registry = context.extras["metrics"].registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
