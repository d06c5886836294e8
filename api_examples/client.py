"""A small Python client of the Ember job service, on httpx.

Usage::

    python api_examples/client.py [SPEC.json] [--url URL] [--token TOKEN]

It submits a spec (default ``api_examples/diehl_cook_quick.json``), follows
the job's progress as server-sent events, then prints the metrics and saves
the parameters and plots under ``results-JOB_ID/``. ``EMBER_URL`` and
``EMBER_TOKEN`` are read when the options are not given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


class EmberClient:
    """Calls of the REST API that a script needs, with errors raised as readable exceptions.

    Args:
        url: the service, for example ``http://127.0.0.1:8000``.
        token: an API token, or ``None`` when authentication is off.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            try:
                problem = response.json()
            except ValueError:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}") from None
            lines = [f"HTTP {response.status_code}: {problem.get('detail')}"]
            lines += [f"  {error['path']}: {error['message']} [{error['rule']}]" for error in problem.get("errors", [])]
            raise RuntimeError("\n".join(lines))
        return response

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Return the normalized spec and its estimates, or raise with the errors."""
        return self._check(self.http.post("/v1/validate", json=spec)).json()

    def submit(self, spec: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        """Submit a job; ``key`` (an Idempotency-Key) makes a retry return the same job."""
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        return self._check(self.http.post("/v1/jobs", json=spec, headers=headers)).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(event, data)`` from the job's event stream until it ends."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as stream:
            self._check(stream)
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event is not None:
                    yield event, json.loads(line.removeprefix("data: "))

    def download(self, path: str, target: Path) -> Path:
        """Save ``GET path`` to ``target``, streamed."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.http.stream("GET", path) as response:
            self._check(response)
            with target.open("wb") as handle:
                for part in response.iter_bytes():
                    handle.write(part)
        return target


def follow(client: EmberClient, job_id: str) -> dict[str, Any]:
    """Print progress while the job runs; return the final job."""
    final = None
    for event, data in client.events(job_id):
        if event == "progress":
            progress = data["progress"]
            eta = f", about {progress['eta_s']:.0f} s left" if progress.get("eta_s") else ""
            print(f"\r{data['status']:<9} {progress['done']}/{progress['total']} {progress.get('unit') or ''}{eta}   ", end="", flush=True)
        elif event == "end":
            final = data
    print()
    return final if final is not None else client.job(job_id)


def save_results(client: EmberClient, job: dict[str, Any], folder: Path) -> list[Path]:
    """Save parameters and plots of a finished job into ``folder``."""
    saved = []
    artifacts = client.http.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
    for item in artifacts:
        if item["name"] == "parameters.safetensors" or item["name"].startswith("plots/"):
            saved.append(client.download(item["url"], folder / item["name"]))
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Submit a job to an Ember service and follow it.")
    parser.add_argument("spec", nargs="?", default=str(Path(__file__).with_name("diehl_cook_quick.json")), help="a job spec (JSON)")
    parser.add_argument("--url", default=os.environ.get("EMBER_URL", "http://127.0.0.1:8000"), help="the service URL")
    parser.add_argument("--token", default=os.environ.get("EMBER_TOKEN"), help="an API token (EMBER_TOKEN)")
    args = parser.parse_args(argv)

    try:
        spec = json.loads(Path(args.spec).read_text())
    except OSError as error:
        print(f"error: cannot read the spec {args.spec}: {error.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as error:
        print(f"error: {args.spec} is not valid JSON: {error}", file=sys.stderr)
        return 2
    client = EmberClient(args.url, args.token)
    try:
        estimate = client.validate(spec)["estimate"]
        print(f"{estimate['neurons']:,} neurons, {estimate['synapses']:,} synapses, {estimate['steps']:,} steps, about {estimate['seconds']:.0f} s")
        job = client.submit(spec)
        print(f"job {job['id']} queued on {job['queue']}")
        job = follow(client, job["id"])
        if job["status"] != "succeeded":
            print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        metrics = {key: value for key, value in job["metrics"].items() if key not in ("confusion_matrix", "assignments")}
        print(json.dumps(metrics, indent=2))
        for path in save_results(client, job, Path(f"results-{job['id']}")):
            print(f"saved {path}")
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"error: cannot reach the Ember service at {args.url} ({error}); start it with `ember serve` or set --url", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
