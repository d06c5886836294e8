"""The lab deployment: PostgreSQL, Redis, the API and separate worker processes.

These tests start real servers on loopback ports (``tests/infra.py``) and
are marked ``integration``. Jobs are small simulations, so each test takes
seconds plus process start-up.
"""

from __future__ import annotations

import io
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from ember.results import DirectoryStore
from ember.runner import run_job
from ember.spec import validate_spec
from safetensors.torch import load as load_safetensors

from service.auth import create_token
from service.config import Settings
from service.db.session import make_engine, make_session_factory, transaction, upgrade_database
from service.testing import simulation_spec
from tests.infra import RedisServer, ServiceProcess, WorkerProcess

pytestmark = pytest.mark.integration

FAST = {
    "EMBER_HEARTBEAT_INTERVAL_S": "0.5",
    "EMBER_JOB_LEASE_S": "3",
    "EMBER_PROGRESS_INTERVAL_S": "0.2",
    "EMBER_REQUEUE_AFTER_S": "3",
}


@dataclass
class Lab:
    env: dict[str, str]
    database_url: str
    tmp_path: Path

    def api(self, **extra: str) -> ServiceProcess:
        return ServiceProcess({**self.env, **extra}, args=["serve", "--no-worker"], log_path=self.tmp_path / "api.log")

    def worker(self, name: str) -> WorkerProcess:
        return WorkerProcess(self.env, args=["worker", "--queues", "cpu", "--hostname", f"{name}@%h"], log_path=self.tmp_path / f"{name}.log")


@pytest.fixture
def lab(postgres_database: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[Lab]:
    redis_server.flushall()
    upgrade_database(postgres_database)
    env = {
        "EMBER_DATABASE_URL": postgres_database,
        "EMBER_BROKER_URL": redis_server.url,
        "EMBER_DATA_DIR": str(tmp_path / "data"),
        **FAST,
    }
    yield Lab(env, postgres_database, tmp_path)


def wait_for(client: httpx.Client, job_id: str, predicate, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not reach the expected state in {timeout} s: {job}")
        time.sleep(0.1)


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def assert_matches_reference(client: httpx.Client, job: dict, spec: dict, tmp_path: Path) -> None:
    reference = DirectoryStore(tmp_path / f"reference-{job['id']}")
    run_job(validate_spec(spec), reference)
    assert job["status"] == "succeeded", job["error"]
    strip = lambda metrics: {key: value for key, value in metrics.items() if key != "run"}
    assert strip(job["metrics"]) == strip(reference.read_metrics())
    tensors = load_safetensors(client.get(f"/v1/jobs/{job['id']}/parameters").content)
    for name, expected in reference.read_parameters().items():
        assert torch.equal(tensors[name], expected), name
    response = client.get(f"/v1/jobs/{job['id']}/spikes", params={"format": "npz", "limit": 10_000_000})
    with np.load(io.BytesIO(response.content), allow_pickle=False) as data:
        order = np.lexsort([data["index"], data["step"]])
        np.testing.assert_array_equal(data["step"][order], reference.read_spikes("raster").step)


def test_killed_worker_resumes_from_checkpoint(lab: Lab) -> None:
    spec = simulation_spec(duration_ms=20000.0, seed=21, checkpoint_every=2000)
    with lab.api() as api, httpx.Client(base_url=api.base_url, timeout=30) as client:
        first = lab.worker("first").start()
        try:
            job_id = client.post("/v1/jobs", json=spec).json()["id"]
            running = wait_for(client, job_id, lambda job: job["progress"]["done"] >= 5000 or finished(job))
            assert running["status"] == "running"
        finally:
            first.kill()
        with lab.worker("second"):
            job = wait_for(client, job_id, finished, timeout=180)
        assert job["attempts"] == 2
        assert_matches_reference(client, job, spec, lab.tmp_path)


def test_duplicate_messages_run_once(lab: Lab) -> None:
    from worker.celery_app import CeleryDispatcher, make_celery

    spec = simulation_spec(duration_ms=3000.0, seed=2)
    with lab.api() as api, httpx.Client(base_url=api.base_url, timeout=30) as client, lab.worker("only") as worker:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        celery_app = make_celery(Settings(database_url=lab.database_url, broker_url=lab.env["EMBER_BROKER_URL"], data_dir=lab.tmp_path))
        dispatcher = CeleryDispatcher(celery_app)
        dispatcher.send(job_id, "cpu")
        dispatcher.send(job_id, "cpu")
        job = wait_for(client, job_id, finished)
        worker.wait_for_log(rf"job {job_id} not claimed by .*: it is (running|succeeded)", timeout=30)
        time.sleep(1.0)
        assert job["attempts"] == 1
        assert worker.log_text().count(f"job {job_id} claimed by") == 1
        assert_matches_reference(client, client.get(f"/v1/jobs/{job_id}").json(), spec, lab.tmp_path)


def test_redis_restart_loses_no_job(postgres_database: str, tmp_path: Path) -> None:
    upgrade_database(postgres_database)
    with RedisServer() as redis:
        lab = Lab({"EMBER_DATABASE_URL": postgres_database, "EMBER_BROKER_URL": redis.url, "EMBER_DATA_DIR": str(tmp_path), **FAST}, postgres_database, tmp_path)
        with lab.api() as api, httpx.Client(base_url=api.base_url, timeout=30) as client:
            ids = [client.post("/v1/jobs", json=simulation_spec(duration_ms=200.0, seed=seed)).json()["id"] for seed in range(3)]
            redis.restart()  # no persistence: every queued message is gone
            with lab.worker("after-restart"):
                jobs = [wait_for(client, job_id, finished, timeout=120) for job_id in ids]
        assert [job["status"] for job in jobs] == ["succeeded"] * 3
        assert [job["attempts"] for job in jobs] == [1, 1, 1]


def test_many_users_hit_quota(lab: Lab) -> None:
    users = [f"user{n}" for n in range(10)]
    engine = make_engine(lab.database_url)
    with transaction(make_session_factory(engine)) as session:
        tokens = {user: create_token(session, user_name=user).token for user in users}
    engine.dispose()
    quota = 5
    with lab.api(EMBER_AUTH_ENABLED="true", EMBER_MAX_CONCURRENT_JOBS=str(quota)) as api:
        latencies: list[float] = []
        outcomes: dict[str, list[int]] = {user: [] for user in users}
        lock = threading.Lock()

        def submit_all(user: str) -> None:
            with httpx.Client(base_url=api.base_url, timeout=60, headers={"Authorization": f"Bearer {tokens[user]}"}) as client:
                for index in range(20):
                    started = time.perf_counter()
                    response = client.post("/v1/jobs", json=simulation_spec(duration_ms=100.0, seed=index))
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        outcomes[user].append(response.status_code)
                    if response.status_code == 429:
                        assert response.json()["limit"] == "max_concurrent_jobs"

        with ThreadPoolExecutor(max_workers=len(users)) as pool:
            list(pool.map(submit_all, users))
    assert len(latencies) == 200
    for user, codes in outcomes.items():
        assert set(codes) <= {202, 429}, (user, codes)
        assert codes.count(202) == quota, (user, codes)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(0.99 * len(latencies)) - 1]
    print(f"\n200 submissions from 10 users: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 10.0
