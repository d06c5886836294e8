"""Job operations shared by the routes, the CLI and the embedded server.

Routes stay thin: they parse the request and call these functions, which run
inside the caller's transaction. Messages to the workers are sent only after
the transaction that created or re-queued a job has committed, so a worker
never receives the id of a job it cannot read yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Job,
    JobKind,
    JobStatus,
    JobTag,
    User,
    utcnow,
)
from service.problems import Problem, limit_exceeded

logger = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """Sends a job id to the workers of a queue."""

    def send(self, job_id: str, queue: str) -> None: ...


def new_job_id() -> str:
    """Return a new random job id (32 hex digits)."""
    return uuid.uuid4().hex


def request_fingerprint(document: Any) -> str:
    """Return the SHA-256 of a request body in canonical JSON, for ``Idempotency-Key`` checks."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- quotas


def lock_user(session: Session, user: User) -> None:
    """Serialise one user's submissions until the transaction ends.

    The update takes the user's row lock on PostgreSQL and the write lock on
    SQLite, so two concurrent submissions cannot both pass the quota check.
    """
    session.execute(update(User).where(User.id == user.id).values(submissions=User.submissions + 1))


def active_submissions(session: Session, user: User) -> int:
    """Return the user's queued or running jobs and sweeps, each sweep counted once."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.owner_id == user.id,
                Job.parent_id.is_(None),
                Job.status.in_([state.value for state in ACTIVE_STATES]),
            )
        )
        or 0
    )


def check_quota(session: Session, user: User, maximum: int) -> None:
    """Reject a submission when the user already has ``maximum`` active jobs.

    Raises:
        Problem: 429 naming ``max_concurrent_jobs``.
    """
    active = active_submissions(session, user)
    if active >= maximum:
        raise limit_exceeded(
            429,
            "max_concurrent_jobs",
            maximum,
            active,
            f"user {user.name!r} has {active} queued or running jobs, the limit is {maximum} "
            "(EMBER_MAX_CONCURRENT_JOBS); wait for one to finish or cancel one",
        )


# ------------------------------------------------------------ submission


@dataclass(frozen=True)
class NewJob:
    """A validated submission: its normalized spec, estimate, queue and tags."""

    spec: dict[str, Any]
    estimate: dict[str, Any]
    queue: str
    tags: list[str]
    sweep_values: dict[str, Any] | None = None


def find_idempotent(session: Session, user: User, key: str, fingerprint: str) -> Job | None:
    """Return the job an earlier request with ``key`` created, or ``None``.

    Raises:
        Problem: 422 when the key was used with a different request body.
    """
    job = session.scalar(select(Job).where(Job.owner_id == user.id, Job.idempotency_key == key))
    if job is None:
        return None
    if job.request_sha256 != fingerprint:
        raise Problem(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            f"Idempotency-Key {key!r} was used for job {job.id} with a different request body; "
            "use a new key for a new request",
        )
    return job


def insert_job(
    session: Session,
    *,
    owner: User,
    new: NewJob,
    max_attempts: int,
    kind: JobKind = JobKind.run,
    parent_id: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> Job:
    """Insert a queued job (or sweep) with its tags and return it."""
    job = Job(
        id=new_job_id(),
        owner_id=owner.id,
        parent_id=parent_id,
        kind=kind.value,
        status=JobStatus.queued.value,
        queue=new.queue,
        spec=new.spec,
        estimate=new.estimate,
        tags=list(dict.fromkeys(new.tags)),
        sweep_values=new.sweep_values,
        idempotency_key=idempotency_key,
        request_sha256=fingerprint,
        max_attempts=max_attempts,
        attempts=0,
        cancel_requested=False,
        run_seconds=0.0,
        progress_done=0,
        progress_total=_planned_total(new.estimate),
        progress_version=0,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    for tag in job.tags:
        session.add(JobTag(job_id=job.id, tag=tag))
    session.flush()
    return job


def submit(
    factory: sessionmaker[Session],
    *,
    user_id: int,
    new: NewJob,
    max_concurrent: int,
    max_attempts: int,
    idempotency_key: str | None,
    fingerprint: str,
    dispatcher: Dispatcher,
) -> tuple[Job, bool]:
    """Store a job, then send it to its queue.

    Args:
        factory: the session factory.
        user_id: the submitting user.
        new: the validated job.
        max_concurrent: the user's quota of active submissions.
        max_attempts: how many times the job may be started.
        idempotency_key: the ``Idempotency-Key`` header, if any.
        fingerprint: the SHA-256 of the request body.
        dispatcher: sends the job id to the workers after commit.

    Returns:
        The job, and whether it was created (``False``: an earlier request
        with the same key created it).

    Raises:
        Problem: 429 over the quota, 422 for a reused key with another body.
    """
    try:
        with factory() as session, session.begin():
            user = session.get_one(User, user_id)
            lock_user(session, user)
            if idempotency_key is not None:
                existing = find_idempotent(session, user, idempotency_key, fingerprint)
                if existing is not None:
                    return existing, False
            check_quota(session, user, max_concurrent)
            job = insert_job(
                session,
                owner=user,
                new=new,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
            )
            job.enqueued_at = utcnow()
    except IntegrityError:
        # A concurrent request with the same key won the insert.
        with factory() as session:
            user = session.get_one(User, user_id)
            existing = find_idempotent(session, user, idempotency_key or "", fingerprint)
            if existing is None:
                raise
            return existing, False
    logger.info("job %s submitted by user %d to queue %s", job.id, user_id, job.queue)
    send_safely(dispatcher, [(job.id, job.queue)])
    return job, True


def send_safely(dispatcher: Dispatcher, jobs: Iterable[tuple[str, str]]) -> int:
    """Send job ids to their queues; a failed send is logged and left to the re-send sweep.

    A job whose message is lost stays ``queued`` in the database, and the
    workers' periodic sweep sends it again after ``requeue_after_s``.

    Returns:
        How many messages were sent.
    """
    sent = 0
    for job_id, queue in jobs:
        try:
            dispatcher.send(job_id, queue)
            sent += 1
        except Exception:  # the broker's errors differ per transport
            logger.exception("sending job %s to queue %s failed; it stays queued and is sent again later", job_id, queue)
    return sent


# ---------------------------------------------------------------- cancel


def cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job now, or ask a running one to stop; sweeps cancel their children.

    Returns:
        The job after the change.

    Raises:
        Problem: 409 when the job already succeeded or failed.
    """
    if job.kind == JobKind.sweep.value:
        children = session.scalars(select(Job).where(Job.parent_id == job.id)).all()
        for child in children:
            if JobStatus(child.status) in ACTIVE_STATES:
                _cancel_one(session, child)
        job.cancel_requested = True
        refresh_sweep(session, job.id)
        logger.info("sweep %s cancelled with %d children", job.id, len(children))
        return job
    state = JobStatus(job.status)
    if state == JobStatus.cancelled:
        return job
    if state in TERMINAL_STATES:
        raise Problem(
            409,
            "job-finished",
            "Job already finished",
            f"job {job.id} already {state.value}; only queued or running jobs can be cancelled",
        )
    _cancel_one(session, job)
    if job.parent_id is not None:
        refresh_sweep(session, job.parent_id)
    return job


def _cancel_one(session: Session, job: Job) -> None:
    if job.status == JobStatus.queued.value:
        # Only a queued job changes here. A worker that claimed it meanwhile
        # reads cancel_requested at its next check.
        result = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.queued.value)
            .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=utcnow())
        )
        if result.rowcount:
            logger.info("job %s cancelled while queued", job.id)
            session.refresh(job)
            return
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.refresh(job)
    logger.info("job %s asked to stop", job.id)


# ---------------------------------------------------------------- sweeps


def sweep_status(children: list[Job]) -> JobStatus:
    """Return a sweep's state from its children's states.

    A sweep is queued while no child has started, and running while any child
    is active after one started. Once all children are final, it succeeded if
    all succeeded, else failed if any failed, else it was cancelled.
    """
    states = [JobStatus(child.status) for child in children]
    if not states:
        return JobStatus.succeeded
    if any(state in ACTIVE_STATES for state in states):
        if all(state == JobStatus.queued for state in states):
            return JobStatus.queued
        return JobStatus.running
    if all(state == JobStatus.succeeded for state in states):
        return JobStatus.succeeded
    if any(state == JobStatus.failed for state in states):
        return JobStatus.failed
    return JobStatus.cancelled


def refresh_sweep(session: Session, sweep_id: str) -> None:
    """Recompute a sweep's state, progress and metrics table from its children."""
    sweep = session.get(Job, sweep_id, with_for_update=False)
    if sweep is None:
        return
    children = list(session.scalars(select(Job).where(Job.parent_id == sweep_id).order_by(Job.created_at, Job.id)))
    state = sweep_status(children)
    now = utcnow()
    sweep.status = state.value
    sweep.progress_done = sum(child.progress_done for child in children)
    sweep.progress_total = sum(child.progress_total for child in children)
    sweep.progress_version += 1
    if state != JobStatus.queued and sweep.started_at is None:
        sweep.started_at = now
    if state in TERMINAL_STATES:
        sweep.finished_at = sweep.finished_at or now
        sweep.metrics = {"children": [child_row(child) for child in children]}
        failed = [child.id for child in children if child.status == JobStatus.failed.value]
        sweep.error = f"{len(failed)} of {len(children)} child jobs failed: {', '.join(failed)}" if failed else None
    session.flush()


def child_row(child: Job) -> dict[str, Any]:
    """Return one row of a sweep's table: the child's id, values, state and metrics."""
    return {"id": child.id, "values": child.sweep_values or {}, "status": child.status, "metrics": child.metrics}


# ----------------------------------------------------------- recovery


def requeue_orphans(session: Session) -> list[tuple[str, str]]:
    """Return every running job to ``queued``; for a restart with no worker alive.

    Used by ``ember serve`` before it starts its own worker: every job still
    ``running`` then lost its worker. The attempt it was in stays counted.

    Returns:
        ``(job id, queue)`` of every queued job, to be sent after commit.
    """
    running = session.scalars(
        select(Job).where(Job.status == JobStatus.running.value, Job.kind == JobKind.run.value)
    ).all()
    for job in running:
        _return_to_queue(job, reason="the server restarted")
    queued = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.queued.value, Job.kind == JobKind.run.value)
        .order_by(Job.created_at, Job.id)
    ).all()
    now = utcnow()
    for job in queued:
        job.enqueued_at = now
    session.flush()
    return [(job.id, job.queue) for job in queued]


def _return_to_queue(job: Job, *, reason: str) -> None:
    if job.attempt_started_at is not None and job.heartbeat_at is not None:
        job.run_seconds += max(0.0, (job.heartbeat_at - job.attempt_started_at).total_seconds())
    job.status = JobStatus.queued.value
    job.lease_token = None
    job.worker = None
    job.attempt_started_at = None
    logger.info("job %s returned to the queue after attempt %d: %s", job.id, job.attempts, reason)


def reap_stale(session: Session, *, lease_s: float, now: datetime | None = None) -> list[tuple[str, str]]:
    """Queue again, or fail, the running jobs whose heartbeat is older than ``lease_s``.

    Each change is a compare-and-set on the job's lease token, so two workers
    sweeping at once, or a worker that claims the job meanwhile, cannot be
    overwritten. A job out of attempts is marked failed with the reason.

    Returns:
        ``(job id, queue)`` of the jobs queued again, to be sent after commit.
    """
    now = now or utcnow()
    stale = session.execute(
        select(Job.id, Job.lease_token, Job.attempts, Job.max_attempts, Job.worker, Job.queue, Job.parent_id,
               Job.attempt_started_at, Job.heartbeat_at)
        .where(
            Job.status == JobStatus.running.value,
            Job.kind == JobKind.run.value,
            Job.heartbeat_at < now - timedelta(seconds=lease_s),
        )
    ).all()
    requeued = []
    for row in stale:
        held = (Job.id == row.id) & (Job.lease_token == row.lease_token) & (Job.status == JobStatus.running.value)
        ran = max(0.0, (row.heartbeat_at - row.attempt_started_at).total_seconds()) if row.attempt_started_at else 0.0
        if row.attempts >= row.max_attempts:
            values: dict[str, Any] = {
                "status": JobStatus.failed.value,
                "finished_at": now,
                "lease_token": None,
                "run_seconds": Job.run_seconds + ran,
                "error": f"the worker stopped sending heartbeats during attempt {row.attempts} of {row.max_attempts} "
                f"(none for {lease_s:g} s); no attempts are left",
            }
        else:
            values = {"status": JobStatus.queued.value, "lease_token": None, "worker": None, "attempt_started_at": None,
                      "run_seconds": Job.run_seconds + ran, "enqueued_at": now}
        if not session.execute(update(Job).where(held).values(**values)).rowcount:
            continue
        if values["status"] == JobStatus.failed.value:
            logger.error("job %s failed: worker %s was lost and all %d attempts are used", row.id, row.worker, row.max_attempts)
        else:
            logger.warning("job %s queued again: no heartbeat from worker %s for %g s (attempt %d of %d)",
                           row.id, row.worker, lease_s, row.attempts, row.max_attempts)
            requeued.append((row.id, row.queue))
        if row.parent_id:
            refresh_sweep(session, row.parent_id)
    session.flush()
    return requeued


def resend_due(session: Session, *, after_s: float, now: datetime | None = None) -> list[tuple[str, str]]:
    """Mark queued jobs whose message is older than ``after_s`` for sending again.

    Returns:
        ``(job id, queue)`` of those jobs, to be sent after commit.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=after_s)
    due = session.scalars(
        select(Job).where(
            Job.status == JobStatus.queued.value,
            Job.kind == JobKind.run.value,
            (Job.enqueued_at.is_(None)) | (Job.enqueued_at < cutoff),
        )
    ).all()
    for job in due:
        job.enqueued_at = now
        logger.info("job %s still queued after %g s; sending its message again", job.id, after_s)
    session.flush()
    return [(job.id, job.queue) for job in due]


def _planned_total(estimate: dict | None) -> int:
    """Return the progress total a queued job will report: its samples, or its steps without data."""
    if not estimate:
        return 0
    return int(estimate.get("samples") or estimate.get("steps") or 0)
