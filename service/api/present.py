"""Conversion of database rows into API bodies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, JobKind
from service.schemas import ChildRow, JobPublic, Progress


def progress_of(job: Job) -> Progress:
    """Return the progress block of a job."""
    fraction = job.progress_done / job.progress_total if job.progress_total else 0.0
    detail = job.progress_detail or {}
    return Progress(
        unit=detail.get("unit"),
        phase=detail.get("phase"),
        epoch=detail.get("epoch"),
        done=job.progress_done,
        total=job.progress_total,
        fraction=min(1.0, fraction),
        rate=job.progress_rate,
        eta_s=job.progress_eta_s,
    )


def job_links(job: Job) -> dict[str, str]:
    """Return the URLs of a job's sub-resources."""
    base = f"/v1/jobs/{job.id}"
    links = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"}
    if job.kind == JobKind.run.value:
        links.update(
            spikes=f"{base}/spikes",
            parameters=f"{base}/parameters",
            artifacts=f"{base}/artifacts",
        )
    return links


def job_public(session: Session, job: Job, *, with_children: bool = True) -> JobPublic:
    """Return the API view of a job; a sweep lists its children when ``with_children``."""
    children = None
    progress = progress_of(job)
    if job.kind == JobKind.sweep.value and with_children:
        rows = list(session.scalars(select(Job).where(Job.parent_id == job.id).order_by(Job.created_at, Job.id)))
        done, total = sum(row.progress_done for row in rows), sum(row.progress_total for row in rows)
        # The sweep's own row is refreshed only when a child changes state;
        # its combined progress is computed here from the children.
        progress = Progress(done=done, total=total, fraction=min(1.0, done / total) if total else 0.0)
        children = [
            ChildRow(
                id=child.id,
                values=child.sweep_values or {},
                status=child.status,
                progress=progress_of(child),
                metrics=child.metrics,
            )
            for child in rows
        ]
    return JobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,
        owner=job.owner.name,
        name=(job.spec or {}).get("name"),
        tags=list(job.tags or []),
        queue=job.queue,
        parent_id=job.parent_id,
        sweep_values=job.sweep_values,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        cancel_requested=job.cancel_requested,
        progress=progress,
        estimate=job.estimate or {},
        metrics=job.metrics,
        steps_per_second=job.steps_per_second,
        error=job.error,
        links=job_links(job),
        children=children,
    )
