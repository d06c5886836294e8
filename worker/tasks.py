"""The Celery task that runs one job, and the steps it takes.

``ember.run_job(job_id)``:

1. claims the job: one ``UPDATE ... WHERE status = 'queued'`` that sets
   ``running``, a fresh lease token and ``attempts + 1``; a duplicate or late
   message finds the job claimed or finished and does nothing;
2. runs :func:`ember.runner.run_job` with a :class:`~worker.store.DatabaseStore`,
   resuming from the job's last checkpoint if an earlier attempt wrote one;
3. while it runs, writes progress at least every ``progress_interval_s`` and
   a heartbeat every ``heartbeat_interval_s``. The heartbeat comes from a
   thread, so a long sample does not look like a dead worker. Between samples
   it stops the job when it was cancelled, ran past its runtime limit, or the
   worker is shutting down;
4. writes the final state with the final results in one transaction.

A job stopped by a worker shutdown goes back to ``queued`` (its attempt is
not counted) and its message is sent again; it resumes from the checkpoint
the runner saved when it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import shared_task
from ember.runner import JobCancelled, Progress, run_job
from ember.spec import JobSpec, Limits
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.models import Job, JobKind, JobStatus, utcnow
from service.db.session import make_engine, make_session_factory, transaction
from service.jobs import Dispatcher, refresh_sweep, send_safely
from worker.celery_app import RUN_JOB_TASK, CeleryDispatcher
from worker.store import DatabaseStore, LeaseLost, RecordedDataLimitExceeded

logger = logging.getLogger(__name__)

#: Seconds between two reads of a job's cancel flag while it runs.
CANCEL_POLL_S = 0.5
#: Limits for re-validating stored specs: the API already applied the real ones.
_NO_LIMITS = Limits(
    max_neurons=2**62, max_synapses=2**62, max_steps=2**62, max_memory_bytes=2**62, max_batch_size=2**62, max_samples=2**62
)


@dataclass
class WorkerRuntime:
    """The database and broker handles of one worker process."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    dispatcher: Dispatcher


_runtimes: dict[tuple[int, int], WorkerRuntime] = {}
_runtime_lock = threading.Lock()


def runtime_for(app: Any) -> WorkerRuntime:
    """Return this process's runtime for a Celery app, created on first use.

    Keyed by process id, so a forked pool process opens its own database
    connections instead of sharing its parent's.
    """
    key = (os.getpid(), id(app))
    with _runtime_lock:
        found = _runtimes.get(key)
        if found is None:
            settings: Settings = app.ember_settings
            engine = make_engine(settings.database_url)
            found = WorkerRuntime(settings, engine, make_session_factory(engine), CeleryDispatcher(app))
            _runtimes[key] = found
        return found


@shared_task(name=RUN_JOB_TASK, bind=True, ignore_result=True)
def run_job_task(self: Any, job_id: str) -> str:
    """Run the job ``job_id``; the message carries nothing else."""
    worker_name = self.request.hostname or f"celery@{socket.gethostname()}"
    return execute_job(runtime_for(self.app), job_id, worker_name=f"{worker_name}:{os.getpid()}")


# ------------------------------------------------------------------ claim


@dataclass(frozen=True)
class Claim:
    """A job this worker claimed: its lease token, attempt and stored spec."""

    job_id: str
    lease_token: str
    attempt: int
    max_attempts: int
    spec: dict[str, Any]
    run_seconds: float
    estimate: dict[str, Any]


def claim_job(factory: sessionmaker[Session], job_id: str, *, worker_name: str) -> Claim | None:
    """Claim a queued job atomically; return ``None`` if it is not claimable.

    A job that is already running, finished, cancelled or unknown is left
    alone, which makes a duplicate message harmless. A job whose attempts are
    used up is marked failed instead.
    """
    token = uuid.uuid4().hex
    now = utcnow()
    with transaction(factory) as session:
        claimed = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.queued.value,
                Job.kind == JobKind.run.value,
                Job.cancel_requested.is_(False),
            )
            .values(
                status=JobStatus.running.value,
                attempts=Job.attempts + 1,
                lease_token=token,
                worker=worker_name,
                started_at=func.coalesce(Job.started_at, now),
                attempt_started_at=now,
                heartbeat_at=now,
                progress_version=Job.progress_version + 1,
            )
        ).rowcount
        job = session.get(Job, job_id, populate_existing=True)
        if not claimed:
            state = job.status if job is not None else "unknown"
            logger.info("job %s not claimed by %s: it is %s (a duplicate or late message)", job_id, worker_name, state)
            return None
        if job.attempts > job.max_attempts:
            job.status = JobStatus.failed.value
            job.lease_token = None
            job.finished_at = now
            job.error = (
                f"the job was started {job.max_attempts} times without finishing (worker lost or restarted); "
                "no attempts are left"
            )
            logger.error("job %s failed: all %d attempts are used", job_id, job.max_attempts)
            if job.parent_id:
                refresh_sweep(session, job.parent_id)
            return None
        if job.parent_id:
            refresh_sweep(session, job.parent_id)
        logger.info("job %s claimed by %s (attempt %d of %d)", job_id, worker_name, job.attempts, job.max_attempts)
        return Claim(job_id, token, job.attempts, job.max_attempts, dict(job.spec), job.run_seconds, dict(job.estimate or {}))


# ---------------------------------------------------------------- control


def _worker_stopping() -> bool:
    """Return whether this Celery worker process received a shutdown signal."""
    from celery.worker import state

    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


class JobControl:
    """Progress writes, heartbeats and stop decisions for one running attempt.

    Attributes:
        reason: why the job was asked to stop: ``cancel``, ``runtime``,
            ``shutdown`` or ``lease``; ``None`` while it may run.
    """

    def __init__(self, runtime: WorkerRuntime, claim: Claim) -> None:
        self.runtime = runtime
        self.claim = claim
        self.settings = runtime.settings
        self.started = time.monotonic()
        self.reason: str | None = None
        self.lease_lost = threading.Event()
        self._stop = threading.Event()
        self._last_progress = -math.inf
        self._last_cancel_check = -math.inf
        self._thread = threading.Thread(target=self._heartbeats, name=f"heartbeat-{claim.job_id[:8]}", daemon=True)

    def __enter__(self) -> JobControl:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def elapsed(self) -> float:
        """Seconds this attempt has run."""
        return time.monotonic() - self.started

    def _held(self) -> Any:
        return (Job.id == self.claim.job_id) & (Job.lease_token == self.claim.lease_token) & (Job.status == JobStatus.running.value)

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                with transaction(self.runtime.factory) as session:
                    held = session.execute(update(Job).where(self._held()).values(heartbeat_at=utcnow())).rowcount
                if not held:
                    logger.warning("job %s: lease lost (cancelled, finished or taken over); stopping", self.claim.job_id)
                    self.lease_lost.set()
                    return
            except DBAPIError:
                logger.exception("job %s: writing the heartbeat failed; retrying", self.claim.job_id)

    def progress(self, report: Progress) -> None:
        """Write a progress report; reports closer than ``progress_interval_s`` are skipped, except the last."""
        now = time.monotonic()
        if now - self._last_progress < self.settings.progress_interval_s and report.done < report.total:
            return
        self._last_progress = now
        values = {
            "progress_done": int(report.done),
            "progress_total": int(report.total),
            "progress_rate": float(report.samples_per_s),
            "progress_eta_s": None if report.eta_s is None else float(report.eta_s),
            "progress_detail": {"phase": report.phase, "epoch": report.epoch, "unit": report.unit},
            "progress_version": Job.progress_version + 1,
            "heartbeat_at": utcnow(),
        }
        with transaction(self.runtime.factory) as session:
            if not session.execute(update(Job).where(self._held()).values(**values)).rowcount:
                self.lease_lost.set()

    def should_cancel(self) -> bool:
        """Return whether the job must stop now; sets :attr:`reason`."""
        if self.reason is None:
            self.reason = self._stop_reason()
        return self.reason is not None

    def _stop_reason(self) -> str | None:
        if self.lease_lost.is_set():
            return "lease"
        if _worker_stopping():
            return "shutdown"
        if self.claim.run_seconds + self.elapsed > self.settings.max_runtime_s:
            return "runtime"
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_POLL_S:
            return None
        self._last_cancel_check = now
        with self.runtime.factory() as session:
            row = session.execute(select(Job.cancel_requested, Job.lease_token).where(Job.id == self.claim.job_id)).one_or_none()
        if row is None or row.lease_token != self.claim.lease_token:
            self.lease_lost.set()
            return "lease"
        return "cancel" if row.cancel_requested else None


# ----------------------------------------------------------------- ending


def finish_job(
    runtime: WorkerRuntime,
    store: DatabaseStore,
    claim: Claim,
    *,
    status: JobStatus,
    elapsed: float,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Write the final state and the held results of a job in one transaction.

    Raises:
        LeaseLost: if the job is no longer this worker's.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "status": status.value,
        "finished_at": now,
        "heartbeat_at": now,
        "lease_token": None,
        "run_seconds": Job.run_seconds + elapsed,
        "error": error,
        "progress_version": Job.progress_version + 1,
    }
    if metrics is not None:
        values["metrics"] = store.pending_metrics if store.pending_metrics is not None else metrics
        run = metrics.get("run") if isinstance(metrics.get("run"), dict) else {}
        speed = run.get("steps_per_s")
        values["steps_per_second"] = float(speed) if isinstance(speed, (int, float)) else None
    if status == JobStatus.succeeded:
        values["progress_done"] = Job.progress_total
    with transaction(runtime.factory) as session:
        held = (Job.id == claim.job_id) & (Job.lease_token == claim.lease_token) & (Job.status == JobStatus.running.value)
        if not session.execute(update(Job).where(held).values(**values)).rowcount:
            raise LeaseLost(f"job {claim.job_id} is no longer held by this worker")
        written = store.write_pending(session)
        parent_id = session.scalar(select(Job.parent_id).where(Job.id == claim.job_id))
        if parent_id:
            refresh_sweep(session, parent_id)
    logger.info("job %s %s after %.1f s (%d result files)%s", claim.job_id, status.value, elapsed, written, f": {error}" if error else "")


def return_to_queue(runtime: WorkerRuntime, claim: Claim, *, elapsed: float, refund: bool, reason: str) -> None:
    """Put a job this worker claimed back in the queue and send its message again.

    Args:
        runtime: the worker's handles.
        claim: the held job.
        elapsed: seconds this attempt ran.
        refund: whether the attempt is not counted (a worker shutdown).
        reason: why, for the log.
    """
    now = utcnow()
    with transaction(runtime.factory) as session:
        held = (Job.id == claim.job_id) & (Job.lease_token == claim.lease_token) & (Job.status == JobStatus.running.value)
        values: dict[str, Any] = {
            "status": JobStatus.queued.value,
            "lease_token": None,
            "worker": None,
            "attempt_started_at": None,
            "run_seconds": Job.run_seconds + elapsed,
            "enqueued_at": now,
            "progress_version": Job.progress_version + 1,
        }
        if refund:
            values["attempts"] = Job.attempts - 1
        if not session.execute(update(Job).where(held).values(**values)).rowcount:
            return
        queue = session.scalar(select(Job.queue).where(Job.id == claim.job_id)) or "cpu"
    logger.warning("job %s returned to queue %s: %s", claim.job_id, queue, reason)
    send_safely(runtime.dispatcher, [(claim.job_id, queue)])


# ------------------------------------------------------------------ the run


def prepare_spec(claim: Claim, settings: Settings) -> JobSpec:
    """Rebuild the stored spec and give it a checkpoint interval if it has none.

    Without ``checkpoint_every`` the runner saves checkpoints only when it is
    stopped, so a killed worker would lose the whole attempt. The interval
    aims at one checkpoint per ``checkpoint_interval_s`` by the job's time
    estimate; it does not enter the spec's fingerprint, so results do not
    change.
    """
    spec = JobSpec.model_validate(claim.spec, context={"limits": _NO_LIMITS})
    if spec.checkpoint_every is not None:
        return spec
    estimate = spec.estimate()
    units = estimate.samples if spec.data is not None else estimate.steps
    seconds = float(claim.estimate.get("seconds") or estimate.seconds)
    if units <= 0 or seconds <= settings.checkpoint_interval_s:
        return spec
    every = max(1, int(units * settings.checkpoint_interval_s / seconds))
    return spec.model_copy(update={"checkpoint_every": every})


def execute_job(runtime: WorkerRuntime, job_id: str, *, worker_name: str) -> str:
    """Claim and run one job; return what happened.

    Returns:
        ``skipped`` (not claimable), ``succeeded``, ``failed``, ``cancelled``,
        ``requeued`` (stopped by a worker shutdown or a database error) or
        ``lost`` (another worker has its lease now).
    """
    settings = runtime.settings
    claim = claim_job(runtime.factory, job_id, worker_name=worker_name)
    if claim is None:
        return "skipped"
    store = DatabaseStore(
        runtime.factory,
        job_id,
        claim.lease_token,
        chunk_bytes=settings.blob_chunk_bytes,
        spike_chunk_events=settings.spike_chunk_events,
        max_recorded_bytes=settings.max_recorded_bytes,
    )
    control = JobControl(runtime, claim)
    try:
        spec = prepare_spec(claim, settings)
        resuming = store.prepare_attempt()
        logger.info("job %s started (attempt %d, %s)", job_id, claim.attempt, "resuming from its checkpoint" if resuming else "from the start")
        with control:
            metrics = run_job(spec, store, progress=control.progress, should_cancel=control.should_cancel)
        finish_job(runtime, store, claim, status=JobStatus.succeeded, elapsed=control.elapsed, metrics=metrics)
        return "succeeded"
    except JobCancelled as stopped:
        return _after_stop(runtime, store, claim, control, stopped)
    except LeaseLost:
        logger.warning("job %s: lease lost; another worker or a cancel took it over", job_id)
        return "lost"
    except OperationalError:
        logger.exception("job %s: the database failed while it ran; queueing it again", job_id)
        try:
            return_to_queue(runtime, claim, elapsed=control.elapsed, refund=False, reason="database error")
        except DBAPIError:
            logger.exception("job %s: queueing it again failed; the stale-job sweep queues it later", job_id)
        return "requeued"
    except Exception as error:  # the job's own failure: store it, do not retry
        message = str(error) if isinstance(error, RecordedDataLimitExceeded) else f"{type(error).__name__}: {error}"
        logger.exception("job %s failed: %s", job_id, message)
        try:
            finish_job(runtime, store, claim, status=JobStatus.failed, elapsed=control.elapsed, error=message)
        except LeaseLost:
            return "lost"
        return "failed"


def _after_stop(runtime: WorkerRuntime, store: DatabaseStore, claim: Claim, control: JobControl, stopped: JobCancelled) -> str:
    reason = control.reason
    elapsed = control.elapsed
    try:
        if reason == "cancel":
            finish_job(runtime, store, claim, status=JobStatus.cancelled, elapsed=elapsed)
            return "cancelled"
        if reason == "runtime":
            limit = runtime.settings.max_runtime_s
            error = (
                f"the job ran past the runtime limit of {limit:g} s (EMBER_MAX_RUNTIME_S) after {stopped.done} of "
                f"{stopped.total} units; its spike records and last checkpoint are kept"
            )
            finish_job(runtime, store, claim, status=JobStatus.failed, elapsed=elapsed, error=error)
            return "failed"
        if reason == "shutdown":
            return_to_queue(runtime, claim, elapsed=elapsed, refund=True, reason="the worker is shutting down")
            return "requeued"
    except LeaseLost:
        pass
    logger.warning("job %s stopped: lease lost", claim.job_id)
    return "lost"
