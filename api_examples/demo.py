"""Demo: start `ember serve`, train a small network over REST, print the accuracy and the plots.

Usage::

    python api_examples/demo.py [SPEC.json]

It starts ``ember serve`` in a subprocess on a free loopback port, with its
data in ``./ember-demo-data/``. It then submits
``api_examples/diehl_cook_quick.json`` (a Diehl and Cook style network on a
small digit set) and follows the job's progress. At the end it prints the
accuracy, saves the plots under ``./ember-demo-results/`` and stops the server.
"""

from __future__ import annotations

import os
import socket
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import EmberClient, follow, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "EMBER_HOST": "127.0.0.1", "EMBER_PORT": str(port), "EMBER_DATA_DIR": str(data_dir)}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    log = (data_dir.parent / "ember-demo-server.log").open("ab")
    command = [sys.executable, "-c", "import sys; from ember.cli import main; sys.exit(main())", "serve"]
    return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ember serve exited with status {server.returncode}; see ember-demo-server.log")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"ember serve was not ready within {timeout:g} s; see ember-demo-server.log")


def main() -> int:
    spec_path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("diehl_cook_quick.json")
    data_dir = Path("ember-demo-data").resolve()
    if data_dir.exists():
        # A demo starts clean: a job left by an interrupted demo would resume first.
        shutil.rmtree(data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"starting ember serve on {url} (data in {data_dir})")
    server = start_server(port, data_dir)
    try:
        wait_ready(url, server)
        client = EmberClient(url)
        try:
            import json

            job = client.submit(json.loads(spec_path.read_text()))
            print(f"submitted {spec_path.name} as job {job['id']}")
            job = follow(client, job["id"])
            if job["status"] != "succeeded":
                print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
                return 1
            metrics = job["metrics"]
            if "accuracy" in metrics:
                print(f"accuracy: {100 * metrics['accuracy']:.1f}% on {metrics['samples'].get('test', '?')} test samples")
            run = metrics.get("run", {})
            if run.get("run_time_s"):
                print(f"run time: {run['run_time_s']:.1f} s on {run.get('device')}")
            saved = save_results(client, job, Path("ember-demo-results"))
            for path in saved:
                print(f"saved {path}")
            print(f"plots are also served at {url}/v1/jobs/{job['id']}/plots/NAME.png while the server runs")
        finally:
            client.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("demo interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)
