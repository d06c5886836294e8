"""The job task in-process: claims, runs, stops, resumes and recovery sweeps on SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from ember.results import DirectoryStore
from ember.runner import run_job
from ember.spec import validate_spec
from sqlalchemy import select, update

import worker.tasks as tasks
from service.auth import get_or_create_user
from service.db import results
from service.db.models import Job, JobKind, JobStatus, utcnow
from service.db.session import transaction
from service.jobs import NewJob, insert_job, reap_stale, resend_due
from service.testing import RecordingDispatcher, fresh_database, make_settings, simulation_spec
from worker.store import DatabaseStore
from worker.tasks import WorkerRuntime, claim_job, execute_job

WORKER = "test-worker"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[WorkerRuntime]:
    settings = make_settings(tmp_path, progress_interval_s=0.01, heartbeat_interval_s=0.2, job_lease_s=1.0)
    engine, factory = fresh_database(tmp_path / "jobs.sqlite")
    yield WorkerRuntime(settings, engine, factory, RecordingDispatcher())
    engine.dispose()


def add_job(runtime: WorkerRuntime, spec: dict, **values: object) -> str:
    normalized = validate_spec(spec).model_dump(mode="json")
    with transaction(runtime.factory) as session:
        user = get_or_create_user(session, "alice")
        job = insert_job(session, owner=user, new=NewJob(spec=normalized, estimate={}, queue="cpu", tags=[]), max_attempts=3)
        for name, value in values.items():
            setattr(job, name, value)
        return job.id


def job_row(runtime: WorkerRuntime, job_id: str) -> Job:
    with runtime.factory() as session:
        return session.get_one(Job, job_id)


def reference_run(tmp_path: Path, spec: dict) -> DirectoryStore:
    store = DirectoryStore(tmp_path / "reference")
    run_job(validate_spec(spec), store)
    return store


def database_store(runtime: WorkerRuntime, job_id: str) -> DatabaseStore:
    return DatabaseStore(runtime.factory, job_id, "unused")


def without_timings(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "run"}


def assert_same_results(runtime: WorkerRuntime, job_id: str, reference: DirectoryStore) -> None:
    job = job_row(runtime, job_id)
    assert job.status == JobStatus.succeeded.value, job.error
    assert without_timings(job.metrics) == without_timings(reference.read_metrics())
    stored = tasks_read_parameters(runtime, job_id)
    expected = reference.read_parameters()
    assert stored.keys() == expected.keys()
    for name in expected:
        assert torch.equal(stored[name], expected[name]), name
    ours = database_store(runtime, job_id).read_spikes("raster")
    theirs = reference.read_spikes("raster")
    assert len(ours) > 0
    np.testing.assert_array_equal(ours.step, theirs.step)
    np.testing.assert_array_equal(ours.index, theirs.index)


def tasks_read_parameters(runtime: WorkerRuntime, job_id: str) -> dict[str, torch.Tensor]:
    from worker.store import read_parameters

    tensors = read_parameters(runtime.factory, job_id)
    assert tensors is not None
    return tensors


# ---------------------------------------------------------------- runs


def test_job_matches_directory_run(runtime: WorkerRuntime, tmp_path: Path) -> None:
    spec = simulation_spec(duration_ms=3000.0, seed=7)
    job_id = add_job(runtime, spec)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "succeeded"
    assert_same_results(runtime, job_id, reference_run(tmp_path, spec))
    job = job_row(runtime, job_id)
    assert (job.progress_done, job.progress_total) == (3000, 3000)
    assert job.attempts == 1
    assert job.lease_token is None
    assert job.steps_per_second == job.metrics["run"]["steps_per_s"]
    with runtime.factory() as session:
        names = [blob.name for blob in results.list_blobs(session, job_id=job_id)]
    assert names == ["checkpoint.json", "checkpoint.safetensors", "metrics.json", "parameters.safetensors", "plots/raster_raster.png"]


def test_second_delivery_does_nothing(runtime: WorkerRuntime) -> None:
    job_id = add_job(runtime, simulation_spec(duration_ms=100.0))
    assert execute_job(runtime, job_id, worker_name=WORKER) == "succeeded"
    finished = job_row(runtime, job_id).finished_at
    assert execute_job(runtime, job_id, worker_name="other-worker") == "skipped"
    job = job_row(runtime, job_id)
    assert job.attempts == 1
    assert job.finished_at == finished


def test_concurrent_deliveries_run_once(runtime: WorkerRuntime) -> None:
    job_id = add_job(runtime, simulation_spec(duration_ms=500.0))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def deliver(name: str) -> None:
        barrier.wait()
        outcomes.append(execute_job(runtime, job_id, worker_name=name))

    threads = [threading.Thread(target=deliver, args=(f"worker-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert job_row(runtime, job_id).attempts == 1


def test_unknown_and_cancelled_jobs_are_skipped(runtime: WorkerRuntime) -> None:
    assert execute_job(runtime, "f" * 32, worker_name=WORKER) == "skipped"
    job_id = add_job(runtime, simulation_spec(), status=JobStatus.cancelled.value, cancel_requested=True)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "skipped"
    assert job_row(runtime, job_id).attempts == 0


def test_failed_run_stores_error(runtime: WorkerRuntime) -> None:
    spec = simulation_spec(duration_ms=100.0, device="cuda") if not torch.cuda.is_available() else None
    if spec is None:
        pytest.skip("needs a machine without CUDA, where a cuda job fails")
    job_id = add_job(runtime, spec)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "failed"
    job = job_row(runtime, job_id)
    assert job.status == "failed"
    assert "cuda" in job.error.lower()
    assert job.finished_at is not None


def test_attempts_are_limited(runtime: WorkerRuntime) -> None:
    job_id = add_job(runtime, simulation_spec(), attempts=3)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "skipped"
    job = job_row(runtime, job_id)
    assert job.status == "failed"
    assert job.attempts == 4
    assert job.error == "the job was started 3 times without finishing (worker lost or restarted); no attempts are left"


# --------------------------------------------------------------- stops


def _when_running(runtime: WorkerRuntime, job_id: str, action) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = job_row(runtime, job_id)
            if job.status == "running" and job.progress_done > 0:
                action()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# Long enough that the native engine cannot finish it before a cancel or the
# runtime limit takes effect (it runs a few million steps per second here).
LONG_MS = 3_000_000.0


def test_cancel_stops_running_job(runtime: WorkerRuntime) -> None:
    job_id = add_job(runtime, simulation_spec(duration_ms=LONG_MS))

    def ask_to_stop() -> None:
        with transaction(runtime.factory) as session:
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))

    watcher = _when_running(runtime, job_id, ask_to_stop)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "cancelled"
    watcher.join()
    job = job_row(runtime, job_id)
    assert job.status == "cancelled"
    assert 0 < job.progress_done < LONG_MS
    # The records up to the stop and the checkpoint are kept.
    stored = database_store(runtime, job_id).read_spikes("raster")
    assert 0 < stored.step.max() < LONG_MS
    assert database_store(runtime, job_id).load_checkpoint() is not None


def test_runtime_limit_fails_job(runtime: WorkerRuntime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"max_runtime_s": 0.05})
    job_id = add_job(runtime, simulation_spec(duration_ms=LONG_MS))
    assert execute_job(runtime, job_id, worker_name=WORKER) == "failed"
    job = job_row(runtime, job_id)
    assert job.error.startswith("the job ran past the runtime limit of 0.05 s (EMBER_MAX_RUNTIME_S) after ")
    assert job.error.endswith(f"of {int(LONG_MS)} units; its spike records and last checkpoint are kept")
    assert len(database_store(runtime, job_id).read_spikes("raster")) > 0


def test_recorded_data_limit_fails_job(runtime: WorkerRuntime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"max_recorded_bytes": 100})
    job_id = add_job(runtime, simulation_spec(duration_ms=2000.0))
    assert execute_job(runtime, job_id, worker_name=WORKER) == "failed"
    assert "above the limit of 100 (EMBER_MAX_RECORDED_BYTES)" in job_row(runtime, job_id).error


def test_shutdown_requeues_and_resumes(runtime: WorkerRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = simulation_spec(duration_ms=6000.0, seed=3)
    job_id = add_job(runtime, spec)
    monkeypatch.setattr(tasks, "_worker_stopping", lambda: True)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "requeued"
    job = job_row(runtime, job_id)
    assert job.status == "queued"
    assert job.attempts == 0  # a shutdown does not use up an attempt
    assert job.progress_done == 1000
    assert runtime.dispatcher.sent == [(job_id, "cpu")]
    monkeypatch.setattr(tasks, "_worker_stopping", lambda: False)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "succeeded"
    assert_same_results(runtime, job_id, reference_run(tmp_path, spec))


class WorkerCrash(BaseException):
    """Stands for the death of the worker process: nothing in the task catches it."""


def test_crash_resumes_from_checkpoint(runtime: WorkerRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = simulation_spec(duration_ms=6000.0, seed=11, checkpoint_every=2000)
    job_id = add_job(runtime, spec)
    original = tasks.JobControl.progress

    def crash_after_4000(self, report) -> None:
        original(self, report)
        if report.done == 5000:
            raise WorkerCrash()

    monkeypatch.setattr(tasks.JobControl, "progress", crash_after_4000)
    with pytest.raises(WorkerCrash):
        execute_job(runtime, job_id, worker_name=WORKER)
    monkeypatch.setattr(tasks.JobControl, "progress", original)
    job = job_row(runtime, job_id)
    assert job.status == "running"
    with runtime.factory() as session:
        chunks = session.execute(select(results.SpikeChunk.step_start, results.SpikeChunk.sealed).where(results.SpikeChunk.job_id == job_id)).all()
    assert any(sealed for _, sealed in chunks)

    # A live worker's sweep finds the stale heartbeat and queues the job again.
    with transaction(runtime.factory) as session:
        requeued = reap_stale(session, lease_s=1.0, now=utcnow() + timedelta(seconds=5))
    assert requeued == [(job_id, "cpu")]
    assert execute_job(runtime, job_id, worker_name="second-worker") == "succeeded"
    job = job_row(runtime, job_id)
    assert job.attempts == 2
    assert_same_results(runtime, job_id, reference_run(tmp_path, spec))


def test_lost_lease_stops_writes(runtime: WorkerRuntime) -> None:
    job_id = add_job(runtime, simulation_spec(duration_ms=30000.0))

    def take_over() -> None:
        with transaction(runtime.factory) as session:
            session.execute(update(Job).where(Job.id == job_id).values(lease_token="x" * 32))

    watcher = _when_running(runtime, job_id, take_over)
    assert execute_job(runtime, job_id, worker_name=WORKER) == "lost"
    watcher.join()
    job = job_row(runtime, job_id)
    assert job.status == "running"
    assert job.lease_token == "x" * 32
    assert job.metrics is None


# ----------------------------------------------------------- sweeps


def test_reap_fails_job_out_of_attempts(runtime: WorkerRuntime) -> None:
    old = utcnow() - timedelta(seconds=100)
    job_id = add_job(runtime, simulation_spec(), status="running", attempts=3, lease_token="a" * 32, heartbeat_at=old, attempt_started_at=old)
    fresh_id = add_job(runtime, simulation_spec(), status="running", attempts=1, lease_token="b" * 32, heartbeat_at=utcnow(), attempt_started_at=old)
    with transaction(runtime.factory) as session:
        assert reap_stale(session, lease_s=60.0) == []
    job = job_row(runtime, job_id)
    assert job.status == "failed"
    assert job.error == "the worker stopped sending heartbeats during attempt 3 of 3 (none for 60 s); no attempts are left"
    assert job_row(runtime, fresh_id).status == "running"


def test_resend_due_messages(runtime: WorkerRuntime) -> None:
    old = utcnow() - timedelta(seconds=1000)
    due = add_job(runtime, simulation_spec(), enqueued_at=old)
    recent = add_job(runtime, simulation_spec(), enqueued_at=utcnow())
    with transaction(runtime.factory) as session:
        assert resend_due(session, after_s=600.0) == [(due, "cpu")]
    with transaction(runtime.factory) as session:
        assert resend_due(session, after_s=600.0) == []
    assert job_row(runtime, recent).status == "queued"


def test_sweep_follows_children(runtime: WorkerRuntime) -> None:
    with transaction(runtime.factory) as session:
        user = get_or_create_user(session, "alice")
        sweep = insert_job(session, owner=user, new=NewJob(spec={}, estimate={}, queue="cpu", tags=[]), max_attempts=3, kind=JobKind.sweep)
        children = []
        for seed in (1, 2):
            normalized = validate_spec(simulation_spec(duration_ms=100.0, seed=seed)).model_dump(mode="json")
            child = insert_job(session, owner=user, new=NewJob(spec=normalized, estimate={}, queue="cpu", tags=[], sweep_values={"seed": seed}), max_attempts=3, parent_id=sweep.id)
            children.append(child.id)
        sweep_id = sweep.id
    assert execute_job(runtime, children[0], worker_name=WORKER) == "succeeded"
    assert job_row(runtime, sweep_id).status == "running"
    assert execute_job(runtime, children[1], worker_name=WORKER) == "succeeded"
    sweep = job_row(runtime, sweep_id)
    assert sweep.status == "succeeded"
    assert [row["values"] for row in sweep.metrics["children"]] == [{"seed": 1}, {"seed": 2}]
    assert all(row["metrics"]["steps"] == 100 for row in sweep.metrics["children"])


def test_claim_sets_lease(runtime: WorkerRuntime) -> None:
    job_id = add_job(runtime, simulation_spec())
    claim = claim_job(runtime.factory, job_id, worker_name=WORKER)
    assert claim is not None
    assert claim_job(runtime.factory, job_id, worker_name="other") is None
    job = job_row(runtime, job_id)
    assert (job.status, job.attempts, job.lease_token, job.worker) == ("running", 1, claim.lease_token, WORKER)
