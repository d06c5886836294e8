"""Progress of a job as server-sent events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service.api.deps import ContextDep, OwnedJob
from service.api.present import job_public
from service.db.models import TERMINAL_STATES, Job, JobStatus

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["jobs"])

#: Seconds between keep-alive comments, so proxies keep an idle stream open.
KEEPALIVE_S = 15.0


def _event(name: str, data: Any, event_id: int | None = None) -> str:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return "\n".join(lines) + "\n\n"


@router.get(
    "/events",
    summary="Follow a job's progress (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "a stream of progress events"}},
)
async def job_events(job: OwnedJob, context: ContextDep, request: Request) -> StreamingResponse:
    """Stream ``progress`` events while the job runs, then one ``end`` event with the final job.

    Each ``progress`` event carries ``status`` and ``progress`` (done, total,
    fraction, rate, eta_s) and is sent when either changes; the database is
    polled every ``EMBER_SSE_POLL_INTERVAL_S``. The stream closes after
    ``end``. Polling ``GET /v1/jobs/{id}`` gives the same information.
    """
    job_id = job.id
    factory = context.factory
    interval = context.settings.sse_poll_interval_s

    def snapshot() -> tuple[tuple[str, int, int], dict[str, Any], dict[str, Any] | None]:
        with factory() as session:
            row = session.get_one(Job, job_id)
            public = job_public(session, row)
            data = {"id": row.id, "status": row.status, "progress": public.progress.model_dump()}
            final = public.model_dump(mode="json") if JobStatus(row.status) in TERMINAL_STATES else None
            key = (row.status, row.progress_version, public.progress.done)
            return key, data, final

    async def stream() -> AsyncIterator[str]:
        last_key = None
        last_sent = time.monotonic()
        counter = 0
        while True:
            key, data, final = await anyio.to_thread.run_sync(snapshot)
            if key != last_key:
                counter += 1
                yield _event("progress", data, counter)
                last_key, last_sent = key, time.monotonic()
            if final is not None:
                yield _event("end", final, counter + 1)
                return
            if time.monotonic() - last_sent > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            if await request.is_disconnected():
                logger.debug("event stream of job %s closed by the client", job_id)
                return
            await anyio.sleep(interval)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
