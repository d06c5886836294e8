"""Parameter sweeps: one request that expands into child jobs."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response, status

from service import engine, sweeps
from service.api.deps import ContextDep, CurrentUser, SessionDep
from service.api.present import job_public
from service.db.models import Job, JobKind, User, utcnow
from service.jobs import NewJob, check_quota, insert_job, lock_user, send_safely
from service.problems import Problem, limit_exceeded, not_found
from service.schemas import JobPublic, SweepCreate

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["sweeps"])


def _base_document(request: SweepCreate, session: SessionDep, user: User) -> dict[str, Any]:
    if (request.base is None) == (request.base_job is None):
        raise Problem(
            422,
            "invalid-request",
            "Invalid request",
            "give exactly one of base (a job spec) and base_job (the id of a job)",
            errors=[{"path": "$.base", "rule": "one_of", "message": "give exactly one of base and base_job", "value": None}],
        )
    if request.base is not None:
        return request.base
    job = session.get(Job, request.base_job) if len(request.base_job or "") == 32 else None
    if job is None or (job.owner_id != user.id and not user.is_admin) or job.kind != JobKind.run.value:
        raise not_found("job", request.base_job or "")
    return dict(job.spec)


def _child_problem(values: dict[str, Any], index: int, problem: Problem) -> Problem:
    problem.detail = f"sweep child {index} ({values}): {problem.detail}"
    problem.extra["child"] = index
    problem.extra["values"] = values
    return problem


@router.post(
    "/sweeps",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    summary="Submit a parameter sweep",
    responses={422: {"description": "invalid base, path or child spec"}, 429: {"description": "too many active jobs"}},
)
def create_sweep(request: SweepCreate, context: ContextDep, session: SessionDep, user: CurrentUser, response: Response) -> JobPublic:
    """Expand a base spec over the ``vary`` values into child jobs under one sweep job.

    Every child is validated like a submitted job before anything is stored.
    The sweep's state, progress and metrics table follow its children, and
    cancelling the sweep cancels them. A sweep counts as one job toward the
    concurrent-job limit.
    """
    settings = context.settings
    count = sweeps.child_count(request.vary, request.mode)
    if count > settings.max_sweep_children:
        raise limit_exceeded(
            422,
            "max_sweep_children",
            settings.max_sweep_children,
            count,
            f"the sweep expands into {count} child jobs, above the limit of {settings.max_sweep_children} "
            "(EMBER_MAX_SWEEP_CHILDREN); vary fewer values",
        )
    base = _base_document(request, session, user)
    try:
        rows = sweeps.combinations(request.vary, request.mode)
    except sweeps.SweepPathError as error:
        raise Problem(422, "invalid-sweep", "Invalid sweep", str(error), errors=[{"path": "$.vary", "rule": "invalid_sweep", "message": str(error), "value": None}]) from None
    children: list[NewJob] = []
    for index, values in enumerate(rows):
        try:
            document = sweeps.expand(base, values)
        except sweeps.SweepPathError as error:
            raise Problem(422, "invalid-sweep", "Invalid sweep", str(error), errors=[{"path": "$.vary", "rule": "invalid_path", "message": str(error), "value": None}]) from None
        try:
            spec = engine.validate_job_document(document, settings=settings, limits=context.limits)
        except Problem as problem:
            raise _child_problem(values, index, problem) from None
        children.append(
            NewJob(
                spec=engine.normalized_document(spec),
                estimate=engine.estimate_document(spec),
                queue=engine.queue_for(spec),
                tags=list(dict.fromkeys([*request.tags, *spec.tags])),
                sweep_values=values,
            )
        )

    total_estimate = {
        key: sum(child.estimate.get(key, 0) for child in children) for key in ("steps", "samples", "seconds", "recorded_bytes")
    }
    parent_document = request.model_dump(mode="json")
    parent_document["base"] = base
    session.commit()  # end the read transaction before taking the user lock
    with session.begin():
        owner = session.get_one(User, user.id)
        lock_user(session, owner)
        check_quota(session, owner, settings.max_concurrent_jobs)
        sweep = insert_job(
            session,
            owner=owner,
            new=NewJob(spec=parent_document, estimate=total_estimate, queue=children[0].queue, tags=request.tags),
            max_attempts=settings.max_attempts,
            kind=JobKind.sweep,
        )
        now = utcnow()
        child_jobs = []
        for child in children:
            row = insert_job(session, owner=owner, new=child, max_attempts=settings.max_attempts, parent_id=sweep.id)
            row.enqueued_at = now
            child_jobs.append((row.id, row.queue))
    logger.info("sweep %s submitted by %s with %d children", sweep.id, user.name, len(child_jobs))
    send_safely(context.dispatcher, child_jobs)
    response.headers["Location"] = f"/v1/jobs/{sweep.id}"
    return job_public(session, session.get_one(Job, sweep.id))
