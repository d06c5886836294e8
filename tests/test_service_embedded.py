"""`ember serve` as a subprocess: SQLite, Celery's SQLAlchemy transport, one embedded worker.

Each test starts the real server on a free loopback port, submits a small
job over HTTP and compares the stored results with :func:`ember.runner.run_job`
writing to a :class:`~ember.results.DirectoryStore` with the same spec.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from ember.results import DirectoryStore
from ember.runner import run_job
from ember.spec import validate_spec
from safetensors.torch import load as load_safetensors

from service.testing import simulation_spec
from tests.infra import ServiceProcess

#: Fast heartbeats so the tests see readiness and recovery within seconds.
FAST = {"EMBER_HEARTBEAT_INTERVAL_S": "0.5", "EMBER_JOB_LEASE_S": "3", "EMBER_PROGRESS_INTERVAL_S": "0.2"}


def start_service(data_dir: Path, log_path: Path) -> ServiceProcess:
    return ServiceProcess({"EMBER_DATA_DIR": str(data_dir), **FAST}, log_path=log_path).start()


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


def check_against_reference(client: httpx.Client, job: dict, spec: dict, tmp_path: Path) -> None:
    reference = DirectoryStore(tmp_path / "reference")
    run_job(validate_spec(spec), reference)
    expected_metrics = reference.read_metrics()
    assert job["status"] == "succeeded", job["error"]
    assert {k: v for k, v in job["metrics"].items() if k != "run"} == {k: v for k, v in expected_metrics.items() if k != "run"}

    parameters = load_safetensors(client.get(f"/v1/jobs/{job['id']}/parameters").content)
    expected = reference.read_parameters()
    assert parameters.keys() == expected.keys()
    for name in expected:
        assert torch.equal(parameters[name], expected[name]), name

    response = client.get(f"/v1/jobs/{job['id']}/spikes", params={"monitor": "raster", "format": "npz", "limit": 10_000_000})
    with np.load(io.BytesIO(response.content), allow_pickle=False) as data:
        order = np.lexsort([data["index"], data["step"]])
        theirs = reference.read_spikes("raster")
        np.testing.assert_array_equal(data["step"][order], theirs.step)
        np.testing.assert_array_equal(data["index"][order], theirs.index)


def test_serve_runs_job_like_run_job(tmp_path: Path) -> None:
    spec = simulation_spec(duration_ms=3000.0, seed=5, tags=["e2e"])
    with start_service(tmp_path / "data", tmp_path / "serve.log") as service, httpx.Client(base_url=service.base_url, timeout=30) as client:
        assert (tmp_path / "data" / "ember.sqlite").exists()
        assert (tmp_path / "data" / "broker.sqlite").exists()
        ready = wait_ready(client)
        assert ready["checks"]["broker"] == "ok"
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202
        job_id = response.json()["id"]

        # Follow the job's progress as server-sent events until it ends.
        events = []
        with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
        assert events[0] == "progress"
        assert events[-1] == "end"

        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["progress"]["done"] == job["progress"]["total"] == 3000
        check_against_reference(client, job, spec, tmp_path)
        names = [item["name"] for item in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]]
        assert "plots/raster_raster.png" in names
        assert client.get(f"/v1/jobs/{job_id}/plots/raster_raster.png").content.startswith(b"\x89PNG")
        assert 'ember_jobs{state="succeeded"} 1.0' in client.get("/metrics").text


def wait_ready(client: httpx.Client, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz did not pass within {timeout} s: {response.json()}")
        time.sleep(0.2)


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_restart_mid_job_finishes_same(tmp_path: Path, how: str) -> None:
    # Long enough that the job is still running when the service is stopped,
    # even on the native engine.
    spec = simulation_spec(duration_ms=2_000_000.0, seed=9, checkpoint_every=20000)
    service = start_service(tmp_path / "data", tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            job_id = client.post("/v1/jobs", json=spec).json()["id"]
            running = wait_for(client, job_id, lambda job: job["progress"]["done"] >= 40000 or finished(job))
        assert running["status"] == "running"
        if how == "stop":
            service.stop()  # SIGTERM: the worker stops at its next chunk and queues the job again
        else:
            workers = child_pids(service.pid)
            assert workers, "the embedded worker was not found"
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            service.kill()
        service.start()
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            job = wait_for(client, job_id, finished, timeout=180)
            assert job["attempts"] == (1 if how == "stop" else 2)
            log = service.log_text()
            assert f"job {job_id} started (attempt {job['attempts']}, resuming from its checkpoint)" in log
            check_against_reference(client, job, spec, tmp_path)
    finally:
        service.close()
