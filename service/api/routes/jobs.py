"""Jobs: validate, submit, list, get and cancel."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Response, status
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from service import engine
from service.api.deps import ContextDep, CurrentUser, OwnedJob, SessionDep
from service.api.present import job_public
from service.db.models import Job, JobTag, User
from service.jobs import NewJob, cancel, request_fingerprint, submit
from service.problems import Problem, invalid_parameter
from service.schemas import JobList, JobPublic, ValidationResult

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

#: Routes whose request body is a job spec; service.app puts the JobSpec
#: schema on them in the OpenAPI document.
SPEC_BODY_ROUTES = (("/v1/validate", "post"), ("/v1/jobs", "post"))
SpecDocument = Annotated[dict[str, Any], Body(description="a job spec (see the JobSpec schema)")]
StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post("/validate", response_model=ValidationResult, summary="Check a job spec without running it")
def validate(document: SpecDocument, context: ContextDep, user: CurrentUser) -> ValidationResult:
    """Validate a spec and return it with defaults filled in and its estimates, or 422."""
    spec = engine.validate_job_document(document, settings=context.settings, limits=context.limits)
    return ValidationResult(spec=engine.normalized_document(spec), estimate=engine.estimate_document(spec), queue=engine.queue_for(spec))


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    summary="Submit a job",
    responses={413: {"description": "request body too large"}, 422: {"description": "invalid spec"}, 429: {"description": "too many active jobs"}},
)
def submit_job(
    document: SpecDocument,
    context: ContextDep,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=255, description="repeat a request without creating a second job"),
    ] = None,
) -> JobPublic:
    """Validate a spec, store the job and send it to its queue; 202 with the job.

    A request that repeats the ``Idempotency-Key`` of an earlier one with the
    same body returns that job again (header ``Idempotent-Replayed: true``).
    """
    spec = engine.validate_job_document(document, settings=context.settings, limits=context.limits)
    new = NewJob(
        spec=engine.normalized_document(spec),
        estimate=engine.estimate_document(spec),
        queue=engine.queue_for(spec),
        tags=list(spec.tags),
    )
    job, created = submit(
        context.factory,
        user_id=user.id,
        new=new,
        max_concurrent=context.settings.max_concurrent_jobs,
        max_attempts=context.settings.max_attempts,
        idempotency_key=idempotency_key,
        fingerprint=request_fingerprint(document),
        dispatcher=context.dispatcher,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    fresh = session.get_one(Job, job.id)
    return job_public(session, fresh)


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        created_text, job_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        created = datetime.fromisoformat(created_text)
        if created.tzinfo is None or not isinstance(job_id, str):
            raise ValueError("cursor without a time zone or id")
        return created, job_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise invalid_parameter("cursor", "invalid_cursor", "cursor is not one returned by a previous page", text[:200]) from None


@router.get("/jobs", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    user: CurrentUser,
    status_filter: Annotated[list[StatusName] | None, Query(alias="status", description="keep jobs in these states")] = None,
    tag: Annotated[list[str] | None, Query(description="keep jobs that have every given tag")] = None,
    parent: Annotated[str | None, Query(description="keep the children of this sweep")] = None,
    owner: Annotated[str | None, Query(description="admins only: keep jobs of this user")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="jobs per page")] = 50,
) -> JobList:
    """Return the caller's jobs (an admin's: everyone's) newest first, a page at a time."""
    query = select(Job).options(selectinload(Job.owner))
    if owner is not None and not user.is_admin and owner != user.name:
        raise Problem(403, "forbidden", "Forbidden", f"only admins can list the jobs of other users (owner={owner!r})")
    if not user.is_admin:
        query = query.where(Job.owner_id == user.id)
    elif owner is not None:
        query = query.join(User, User.id == Job.owner_id).where(User.name == owner)
    if status_filter:
        query = query.where(Job.status.in_(status_filter))
    for name in tag or []:
        query = query.where(Job.id.in_(select(JobTag.job_id).where(JobTag.tag == name)))
    if parent is not None:
        query = query.where(Job.parent_id == parent)
    if cursor is not None:
        created, last_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < last_id)))
    jobs = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = _encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return JobList(items=[job_public(session, job, with_children=False) for job in jobs[:limit]], next_cursor=next_cursor)


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="Get a job's state, progress and metrics")
def get_job(job: OwnedJob, session: SessionDep) -> JobPublic:
    """Return one job; a sweep includes the table of its children."""
    return job_public(session, job)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a job",
    responses={202: {"description": "the running job was asked to stop"}, 409: {"description": "the job already finished"}},
)
def cancel_job(job: OwnedJob, session: SessionDep, user: CurrentUser, response: Response) -> JobPublic:
    """Cancel a queued job (200), or ask a running one to stop at its next sample (202)."""
    cancel(session, job)
    session.commit()
    logger.info("user %s cancelled job %s (status now %s)", user.name, job.id, job.status)
    if job.status == "running":
        response.status_code = status.HTTP_202_ACCEPTED
    return job_public(session, job)
