"""REST API routes against a real SQLite database, with messages recorded instead of sent."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pytest
import torch
from ember.spec import Limits
from fastapi.exceptions import RequestValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.auth import create_token, revoke_token
from service.db import results
from service.db.models import Job, JobStatus, WorkerHeartbeat, utcnow
from service.db.session import transaction
from service.problems import validation_problem
from service.testing import RecordingDispatcher, TestClient, fresh_database, make_settings, simulation_spec

PROBLEM = "application/problem+json"


@dataclass
class Api:
    client: TestClient
    factory: sessionmaker[Session]
    dispatcher: RecordingDispatcher
    tokens: dict[str, str]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def submit(self, user: str = "alice", **spec_fields: object) -> dict:
        response = self.client.post("/v1/jobs", json=simulation_spec(**spec_fields), headers=self.headers(user))
        assert response.status_code == 202, response.text
        return response.json()

    def set_status(self, job_id: str, status: JobStatus, **values: object) -> None:
        with transaction(self.factory) as session:
            session.execute(update(Job).where(Job.id == job_id).values(status=status.value, **values))


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    settings = make_settings(tmp_path, auth_enabled=True, max_concurrent_jobs=3, max_body_bytes=64 * 1024, max_sweep_children=4)
    engine, factory = fresh_database(tmp_path / "jobs.sqlite")
    dispatcher = RecordingDispatcher()
    tokens = {}
    with transaction(factory) as session:
        for name, admin in (("alice", False), ("bob", False), ("root", True)):
            tokens[name] = create_token(session, user_name=name, is_admin=admin).token
    app = create_app(settings, limits=Limits(max_neurons=1000), dispatcher=dispatcher, engine=engine)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, factory, dispatcher, tokens)
    engine.dispose()


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


# ------------------------------------------------------------------ auth


def test_missing_token_is_401(api: Api) -> None:
    body = problem(api.client.get("/v1/jobs"), 401)
    assert body["detail"].startswith("missing Authorization header")


def test_wrong_scheme_is_401(api: Api) -> None:
    response = api.client.get("/v1/jobs", headers={"Authorization": f"Basic {api.tokens['alice']}"})
    assert problem(response, 401)["detail"] == "the Authorization header must be 'Bearer TOKEN'"
    assert response.headers["www-authenticate"] == 'Bearer realm="ember"'


def test_revoked_token_is_401(api: Api) -> None:
    with transaction(api.factory) as session:
        assert revoke_token(session, api.tokens["bob"][:14]) == 1
    assert problem(api.client.get("/v1/jobs", headers=api.headers("bob")), 401)["detail"] == "the token is unknown or revoked"
    assert api.client.get("/v1/jobs", headers=api.headers("alice")).status_code == 200


def test_forged_token_is_401(api: Api) -> None:
    forged = api.tokens["alice"][:-1] + ("A" if api.tokens["alice"][-1] != "A" else "B")
    response = api.client.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"})
    assert problem(response, 401)["detail"] == "the token is unknown or revoked"


# -------------------------------------------------------------- validate


def test_validate_returns_estimate(api: Api) -> None:
    response = api.client.post("/v1/validate", json=simulation_spec(duration_ms=200.0, neurons=5), headers=api.headers("alice"))
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True
    assert body["queue"] == "cpu"
    assert body["estimate"]["neurons"] == 25
    assert body["estimate"]["synapses"] == 100
    assert body["estimate"]["steps"] == 200
    assert body["spec"]["rest_ms"] == 150.0  # defaults are filled in


def test_validate_unknown_field(api: Api) -> None:
    spec = simulation_spec()
    spec["network"]["populations"]["cells"]["tau"] = 5.0
    body = problem(api.client.post("/v1/validate", json=spec, headers=api.headers("alice")), 422)
    assert body["type"] == "urn:ember:problem:invalid-spec"
    assert body["errors"] == [
        {
            "path": "$.network.populations.cells.tau",
            "rule": "extra_forbidden",
            "message": "unknown field 'tau'; remove it or check its spelling",
            "value": 5.0,
        }
    ]


def test_validate_wrong_type(api: Api) -> None:
    body = problem(api.client.post("/v1/validate", json=simulation_spec(duration_ms="long"), headers=api.headers("alice")), 422)
    paths = {error["path"]: error for error in body["errors"]}
    assert paths["$.duration_ms"]["value"] == "long"
    assert paths["$.duration_ms"]["rule"] == "float_type"


def test_validate_unknown_dataset_shows_value(api: Api) -> None:
    spec = simulation_spec(data={"dataset": "mnist60k"})
    body = problem(api.client.post("/v1/validate", json=spec, headers=api.headers("alice")), 422)
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert error["path"] == "$.data.dataset"
    assert error["rule"] == "union_tag_invalid"
    assert error["value"] == "mnist60k"
    assert "'mnist5k'" in error["message"]


def test_request_union_tag_error_shows_tag() -> None:
    error = RequestValidationError(
        [
            {
                "type": "union_tag_invalid",
                "loc": ("body", "data", "mnist60k"),
                "msg": "Input tag 'mnist60k' found using 'dataset' does not match any of the expected tags",
                "input": {"dataset": "mnist60k"},
                "ctx": {"discriminator": "'dataset'", "tag": "mnist60k", "expected_tags": "'mnist'"},
            }
        ]
    )
    entry = validation_problem(error).errors[0]
    assert entry["rule"] == "union_tag_invalid"
    assert entry["value"] == "mnist60k"


def test_validate_body_not_an_object(api: Api) -> None:
    body = problem(api.client.post("/v1/validate", json=[1, 2], headers=api.headers("alice")), 422)
    assert body["errors"][0]["path"] == "$"
    assert body["errors"][0]["rule"] == "dict_type"


def test_validate_invalid_json(api: Api) -> None:
    response = api.client.post("/v1/validate", content=b'{"kind": ', headers={**api.headers("alice"), "Content-Type": "application/json"})
    body = problem(response, 422)
    assert body["errors"][0]["rule"] == "json_invalid"
    assert body["errors"][0]["path"] == "$"
    assert body["errors"][0]["message"].startswith("the request body is not valid JSON at character 9")


def test_validate_body_without_json_content_type(api: Api) -> None:
    response = api.client.post("/v1/validate", content=b'{"kind": "simulate"}', headers=api.headers("alice"))
    body = problem(response, 422)
    assert body["errors"][0]["path"] == "$"
    assert "Content-Type: application/json" in body["errors"][0]["message"]


def test_validate_oversized_network(api: Api) -> None:
    body = problem(api.client.post("/v1/validate", json=simulation_spec(neurons=2000), headers=api.headers("alice")), 422)
    error = body["errors"][0]
    assert error["rule"] == "limit_exceeded"
    assert error["path"] == "$.network.populations"
    assert error["value"] == 2020
    assert "above the limit of 1,000" in error["message"]


def test_validate_rejects_local_file(api: Api) -> None:
    spec = simulation_spec(initial_parameters="/etc/passwd")
    body = problem(api.client.post("/v1/validate", json=spec, headers=api.headers("alice")), 422)
    assert body["errors"][0]["path"] == "$.initial_parameters"
    assert body["errors"][0]["rule"] == "local_file_forbidden"


def test_body_over_limit_is_413(api: Api) -> None:
    spec = simulation_spec(name="x" * 100)
    spec["padding"] = "y" * (65 * 1024)
    body = problem(api.client.post("/v1/jobs", json=spec, headers=api.headers("alice")), 413)
    assert body["limit"] == "max_body_bytes"
    assert body["maximum"] == 64 * 1024
    assert body["value"] > 64 * 1024
    assert api.dispatcher.sent == []


# ---------------------------------------------------------------- submit


def test_submit_queues_and_sends(api: Api) -> None:
    response = api.client.post("/v1/jobs", json=simulation_spec(tags=["demo"]), headers=api.headers("alice"))
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["owner"] == "alice"
    assert job["tags"] == ["demo"]
    assert job["attempts"] == 0
    # A simulation without data reports steps: 200 ms at dt = 1 ms.
    assert job["progress"]["done"] == 0
    assert job["progress"]["total"] == 200
    assert api.dispatcher.sent == [(job["id"], "cpu")]


def test_submit_cuda_job_goes_to_gpu_queue(api: Api) -> None:
    job = api.submit(device="cuda")
    assert job["queue"] == "gpu"
    assert api.dispatcher.sent == [(job["id"], "gpu")]


def test_idempotency_key_replays(api: Api) -> None:
    headers = {**api.headers("alice"), "Idempotency-Key": "run-1"}
    first = api.client.post("/v1/jobs", json=simulation_spec(), headers=headers)
    second = api.client.post("/v1/jobs", json=simulation_spec(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(api.dispatcher.sent) == 1


def test_idempotency_key_is_per_user(api: Api) -> None:
    alice = api.client.post("/v1/jobs", json=simulation_spec(), headers={**api.headers("alice"), "Idempotency-Key": "k"})
    bob = api.client.post("/v1/jobs", json=simulation_spec(), headers={**api.headers("bob"), "Idempotency-Key": "k"})
    assert alice.json()["id"] != bob.json()["id"]


def test_idempotency_key_with_other_body(api: Api) -> None:
    headers = {**api.headers("alice"), "Idempotency-Key": "run-1"}
    api.client.post("/v1/jobs", json=simulation_spec(seed=1), headers=headers)
    body = problem(api.client.post("/v1/jobs", json=simulation_spec(seed=2), headers=headers), 422)
    assert body["type"] == "urn:ember:problem:idempotency-key-reused"
    assert "with a different request body" in body["detail"]


def test_concurrent_job_quota(api: Api) -> None:
    jobs = [api.submit() for _ in range(3)]
    body = problem(api.client.post("/v1/jobs", json=simulation_spec(), headers=api.headers("alice")), 429)
    assert body["limit"] == "max_concurrent_jobs"
    assert body["maximum"] == 3
    assert body["value"] == 3
    assert "user 'alice' has 3 queued or running jobs" in body["detail"]
    # Another user has their own quota, and a finished job frees a slot.
    api.submit("bob")
    api.set_status(jobs[0]["id"], JobStatus.succeeded)
    api.submit()


# ------------------------------------------------------------ list / get


def test_list_pages_newest_first(api: Api) -> None:
    api.dispatcher.sent.clear()
    ids = []
    for index in range(5):
        job = api.submit(tags=["even"] if index % 2 == 0 else ["odd"])
        ids.append(job["id"])
        if index < 4:
            api.set_status(job["id"], JobStatus.succeeded)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/jobs", params=params, headers=api.headers("alice")).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_list_filters_status_and_tags(api: Api) -> None:
    first = api.submit(tags=["a", "b"])
    second = api.submit(tags=["a"])
    api.set_status(first["id"], JobStatus.failed)
    get = lambda **params: [j["id"] for j in api.client.get("/v1/jobs", params=params, headers=api.headers("alice")).json()["items"]]
    assert get(status="failed") == [first["id"]]
    assert get(status=["failed", "queued"]) == [second["id"], first["id"]]
    assert get(tag="a") == [second["id"], first["id"]]
    assert get(tag=["a", "b"]) == [first["id"]]
    assert get(tag="c") == []


def test_list_bad_parameters(api: Api) -> None:
    body = problem(api.client.get("/v1/jobs", params={"cursor": "nonsense"}, headers=api.headers("alice")), 422)
    assert body["errors"][0]["path"] == "query.cursor"
    body = problem(api.client.get("/v1/jobs", params={"limit": 0}, headers=api.headers("alice")), 422)
    assert body["errors"][0]["path"] == "query.limit"
    assert body["errors"][0]["rule"] == "greater_than_equal"
    body = problem(api.client.get("/v1/jobs", params={"status": "done"}, headers=api.headers("alice")), 422)
    assert body["errors"][0]["path"] == "query.status.0"
    assert body["errors"][0]["value"] == "done"


def test_users_see_only_their_jobs(api: Api) -> None:
    alice_job = api.submit("alice")
    bob_job = api.submit("bob")
    listed = lambda user: [j["id"] for j in api.client.get("/v1/jobs", headers=api.headers(user)).json()["items"]]
    assert listed("alice") == [alice_job["id"]]
    assert listed("bob") == [bob_job["id"]]
    assert listed("root") == [bob_job["id"], alice_job["id"]]
    owner_filter = api.client.get("/v1/jobs", params={"owner": "bob"}, headers=api.headers("root")).json()
    assert [j["id"] for j in owner_filter["items"]] == [bob_job["id"]]
    body = problem(api.client.get("/v1/jobs", params={"owner": "bob"}, headers=api.headers("alice")), 403)
    assert body["detail"] == "only admins can list the jobs of other users (owner='bob')"


def test_other_users_job_is_404(api: Api) -> None:
    job = api.submit("bob")
    other = problem(api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers("alice")), 404)
    missing = problem(api.client.get(f"/v1/jobs/{'0' * 32}", headers=api.headers("alice")), 404)
    assert other["detail"] == f"job '{job['id']}' was not found"
    assert missing["detail"] == f"job '{'0' * 32}' was not found"
    for path in ("/spikes", "/parameters", "/artifacts", "/plots/raster.png", "/events"):
        assert api.client.get(f"/v1/jobs/{job['id']}{path}", headers=api.headers("alice")).status_code == 404
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("alice")).status_code == 404
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers("root")).status_code == 200


def test_malformed_job_id_is_404(api: Api) -> None:
    body = problem(api.client.get("/v1/jobs/not-an-id", headers=api.headers("alice")), 404)
    assert body["detail"] == "job 'not-an-id' was not found"


def test_unknown_route_is_problem(api: Api) -> None:
    body = problem(api.client.get("/v1/nothing"), 404)
    assert body["detail"] == "no route matches GET /v1/nothing"


# ---------------------------------------------------------------- cancel


def test_cancel_queued_job(api: Api) -> None:
    job = api.submit()
    response = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("alice"))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    again = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("alice"))
    assert again.status_code == 200


def test_cancel_running_job_asks_to_stop(api: Api) -> None:
    job = api.submit()
    api.set_status(job["id"], JobStatus.running, lease_token="t" * 32)
    response = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("alice"))
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True


def test_cancel_finished_job_is_409(api: Api) -> None:
    job = api.submit()
    api.set_status(job["id"], JobStatus.succeeded)
    body = problem(api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("alice")), 409)
    assert body["detail"] == f"job {job['id']} already succeeded; only queued or running jobs can be cancelled"


def test_admin_cancels_any_job(api: Api) -> None:
    job = api.submit("bob")
    response = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("root"))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


# --------------------------------------------------------------- results


def _store_spikes(api: Api, job_id: str, monitor: str = "raster", chunk_events: int = 4) -> results.SpikeArrays:
    step = np.array([0, 1, 1, 3, 5, 8, 13, 21, 34, 55], dtype=np.int64)
    index = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], dtype=np.int64)
    records = results.SpikeArrays(step, index, None)
    with transaction(api.factory) as session:
        results.write_spikes(session, job_id=job_id, monitor=monitor, records=records, dt=0.5, shape=[5], chunk_events=chunk_events)
    return records


def test_spikes_window_in_steps_and_ms(api: Api) -> None:
    job = api.submit()
    _store_spikes(api, job["id"])
    url = f"/v1/jobs/{job['id']}/spikes"
    by_steps = api.client.get(url, params={"t_start": 1, "t_stop": 13, "unit": "steps"}, headers=api.headers("alice")).json()
    assert by_steps["step"] == [1, 1, 3, 5, 8]
    assert by_steps["index"] == [1, 2, 3, 4, 0]
    assert by_steps["sample"] is None
    assert (by_steps["step_start"], by_steps["step_stop"]) == (1, 13)
    # dt = 0.5 ms: [0.5 ms, 6.5 ms) starts at step 1 and ends before step 13.
    by_ms = api.client.get(url, params={"t_start": 0.5, "t_stop": 6.5}, headers=api.headers("alice")).json()
    assert by_ms["step"] == by_steps["step"]
    neurons = api.client.get(url, params={"neurons": "0,3-4"}, headers=api.headers("alice")).json()
    assert neurons["index"] == [0, 3, 4, 0, 3, 4]
    assert neurons["step"] == [0, 3, 5, 8, 34, 55]


def test_spikes_pages_with_cursor(api: Api) -> None:
    job = api.submit()
    records = _store_spikes(api, job["id"], chunk_events=3)
    url = f"/v1/jobs/{job['id']}/spikes"
    steps, cursor, pages = [], None, 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = api.client.get(url, params=params, headers=api.headers("alice")).json()
        steps += page["step"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert steps == records.step.tolist()
    assert pages == 3


def test_spikes_npz_format(api: Api) -> None:
    job = api.submit()
    _store_spikes(api, job["id"])
    response = api.client.get(f"/v1/jobs/{job['id']}/spikes", params={"format": "npz", "t_stop": 10, "unit": "steps"}, headers=api.headers("alice"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(response.content), allow_pickle=False) as data:
        assert data["step"].tolist() == [0, 1, 1, 3, 5, 8]
        assert data["index"].dtype == np.int64
        assert float(data["dt"]) == 0.5
        assert data["shape"].tolist() == [5]


def test_spikes_bad_input(api: Api) -> None:
    job = api.submit()
    url = f"/v1/jobs/{job['id']}/spikes"
    body = problem(api.client.get(url, headers=api.headers("alice")), 404)
    assert body["detail"] == f"job {job['id']} has no spike records (status queued)"
    _store_spikes(api, job["id"])
    _store_spikes(api, job["id"], monitor="other")
    body = problem(api.client.get(url, headers=api.headers("alice")), 422)
    assert body["errors"][0]["path"] == "query.monitor"
    assert "name one of other, raster" in body["detail"]
    assert problem(api.client.get(url, params={"monitor": "nope"}, headers=api.headers("alice")), 404)["detail"] == "monitor 'nope' was not found"
    cases = [
        ({"monitor": "raster", "neurons": "1-x"}, "query.neurons", "invalid_format"),
        ({"monitor": "raster", "neurons": "4-2"}, "query.neurons", "reversed_range"),
        ({"monitor": "raster", "neurons": "7"}, "query.neurons", "out_of_range"),
        ({"monitor": "raster", "t_start": 5, "t_stop": 5}, "query.t_stop", "greater_than"),
        ({"monitor": "raster", "t_start": 1.5, "unit": "steps"}, "query.t_start", "whole_steps"),
        ({"monitor": "raster", "t_start": -1}, "query.t_start", "greater_than_equal"),
        ({"monitor": "raster", "t_start": "soon"}, "query.t_start", "float_parsing"),
        ({"monitor": "raster", "cursor": "!!"}, "query.cursor", "invalid_cursor"),
        ({"monitor": "raster", "unit": "s"}, "query.unit", "literal_error"),
    ]
    for params, path, rule in cases:
        body = problem(api.client.get(url, params=params, headers=api.headers("alice")), 422)
        assert (body["errors"][0]["path"], body["errors"][0]["rule"]) == (path, rule), params


def _store_blob(api: Api, job_id: str, name: str, data: bytes, media_type: str, chunk_bytes: int = 7) -> None:
    with transaction(api.factory) as session:
        results.write_blob(session, job_id=job_id, name=name, data=data, media_type=media_type, chunk_bytes=chunk_bytes)


def test_parameters_download_and_ranges(api: Api) -> None:
    job = api.submit()
    url = f"/v1/jobs/{job['id']}/parameters"
    assert problem(api.client.get(url, headers=api.headers("alice")), 404)["detail"] == (
        f"job {job['id']} has no stored parameters (status queued)"
    )
    tensors = {"drive.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    data = save_safetensors(tensors)
    _store_blob(api, job["id"], "parameters.safetensors", data, "application/octet-stream")
    full = api.client.get(url, headers=api.headers("alice"))
    assert full.status_code == 200
    assert full.content == data
    assert torch.equal(load_safetensors(full.content)["drive.weight"], tensors["drive.weight"])
    assert full.headers["accept-ranges"] == "bytes"
    part = api.client.get(url, headers={**api.headers("alice"), "Range": "bytes=5-20"})
    assert part.status_code == 206
    assert part.content == data[5:21]
    assert part.headers["content-range"] == f"bytes 5-20/{len(data)}"
    suffix = api.client.get(url, headers={**api.headers("alice"), "Range": "bytes=-10"})
    assert suffix.content == data[-10:]
    open_end = api.client.get(url, headers={**api.headers("alice"), "Range": f"bytes={len(data) - 3}-"})
    assert open_end.content == data[-3:]
    body = problem(api.client.get(url, headers={**api.headers("alice"), "Range": f"bytes={len(data)}-"}), 416)
    assert body["detail"] == f"Range 'bytes={len(data)}-' lies outside the content of {len(data)} bytes"
    cached = api.client.get(url, headers={**api.headers("alice"), "If-None-Match": full.headers["etag"]})
    assert cached.status_code == 304


def test_artifacts_list_and_plots(api: Api) -> None:
    job = api.submit()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    _store_blob(api, job["id"], "plots/raster_cells.png", png, "image/png")
    _store_blob(api, job["id"], "metrics.json", b'{"steps": 200}', "application/json")
    listing = api.client.get(f"/v1/jobs/{job['id']}/artifacts", headers=api.headers("alice")).json()["items"]
    assert [item["name"] for item in listing] == ["metrics.json", "plots/raster_cells.png"]
    import hashlib

    assert listing[1]["size"] == len(png)
    assert listing[1]["sha256"] == hashlib.sha256(png).hexdigest()
    download = api.client.get(listing[1]["url"], headers=api.headers("alice"))
    assert download.content == png
    assert download.headers["x-content-sha256"] == listing[1]["sha256"]
    plot = api.client.get(f"/v1/jobs/{job['id']}/plots/raster_cells.png", headers=api.headers("alice"))
    assert plot.status_code == 200
    assert plot.headers["content-type"] == "image/png"
    assert plot.content == png
    body = problem(api.client.get(f"/v1/jobs/{job['id']}/plots/weights.png", headers=api.headers("alice")), 404)
    assert body["detail"] == f"job {job['id']} has no plot 'weights'; plots: raster_cells"
    body = problem(api.client.get(f"/v1/jobs/{job['id']}/artifacts/../../etc/passwd", headers=api.headers("alice")), 404)


# --------------------------------------------------------------- events


def test_events_stream_ends_with_final_job(api: Api) -> None:
    job = api.submit()
    api.set_status(job["id"], JobStatus.succeeded, progress_done=200, progress_total=200, metrics={"steps": 200})
    response = api.client.get(f"/v1/jobs/{job['id']}/events", headers=api.headers("alice"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.strip()]
    assert events[0].splitlines()[0] == "event: progress"
    progress = json.loads(events[0].splitlines()[-1].removeprefix("data: "))
    assert progress["status"] == "succeeded"
    assert progress["progress"]["fraction"] == 1.0
    assert events[-1].splitlines()[0] == "event: end"
    final = json.loads(events[-1].splitlines()[-1].removeprefix("data: "))
    assert final["metrics"] == {"steps": 200}


# --------------------------------------------------------- health, metrics


def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    not_ready = api.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["workers:cpu"] == "failed: no live worker"
    with transaction(api.factory) as session:
        session.add(WorkerHeartbeat(hostname="w1", queues="cpu,gpu", pid=1, started_at=utcnow(), last_seen_at=utcnow()))
        session.add(WorkerHeartbeat(hostname="w0", queues="cpu", pid=2, started_at=utcnow(), last_seen_at=utcnow() - timedelta(hours=1)))
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok (no broker in use)", "workers:cpu": "ok (1)"}


def test_prometheus_metrics(api: Api) -> None:
    first, second = api.submit(), api.submit()
    api.set_status(first["id"], JobStatus.succeeded, run_seconds=3.0, steps_per_second=1500.0, finished_at=utcnow())
    text = api.client.get("/metrics").text
    assert 'ember_jobs{state="queued"} 1.0' in text
    assert 'ember_jobs{state="succeeded"} 1.0' in text
    assert 'ember_queue_depth{queue="cpu"} 1.0' in text
    assert 'ember_job_duration_seconds_bucket{le="1"} 0.0' in text
    assert 'ember_job_duration_seconds_bucket{le="5"} 1.0' in text
    assert "ember_job_duration_seconds_sum 3.0" in text
    assert 'ember_steps_per_second{queue="cpu"} 1500.0' in text
    assert 'ember_http_requests_total{method="POST",route="/v1/jobs",status="202"} 2.0' in text
    assert second["status"] == "queued"


def test_openapi_document(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    assert "JobSpec" in document["components"]["schemas"]
    assert "LIFSpec" in document["components"]["schemas"]
    submit = document["paths"]["/v1/jobs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobSpec"}
    for path in ("/v1/validate", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/spikes", "/v1/jobs/{job_id}/parameters",
                 "/v1/jobs/{job_id}/artifacts", "/v1/jobs/{job_id}/plots/{name}.png", "/v1/sweeps", "/healthz", "/readyz", "/metrics"):
        assert path in document["paths"], path
    assert api.client.get("/docs").status_code == 200


# ---------------------------------------------------------------- sweeps


def test_sweep_expands_into_children(api: Api) -> None:
    request = {"base": simulation_spec(), "vary": {"seed": [1, 2], "network.connections.drive.weight": [2.0, 4.0]}, "tags": ["sweep"]}
    response = api.client.post("/v1/sweeps", json=request, headers=api.headers("alice"))
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert sweep["kind"] == "sweep"
    assert sweep["status"] == "queued"
    values = [child["values"] for child in sweep["children"]]
    assert values == [
        {"seed": 1, "network.connections.drive.weight": 2.0},
        {"seed": 1, "network.connections.drive.weight": 4.0},
        {"seed": 2, "network.connections.drive.weight": 2.0},
        {"seed": 2, "network.connections.drive.weight": 4.0},
    ]
    assert sorted(api.dispatcher.sent) == sorted((child["id"], "cpu") for child in sweep["children"])
    child = api.client.get(f"/v1/jobs/{sweep['children'][3]['id']}", headers=api.headers("alice")).json()
    assert child["parent_id"] == sweep["id"]
    assert child["tags"] == ["sweep"]
    with api.factory() as session:
        stored = session.get(Job, child["id"]).spec
    assert stored["seed"] == 2
    assert stored["network"]["connections"]["drive"]["weight"] == {"type": "constant", "value": 4.0}


def test_sweep_from_base_job_zip_and_cancel(api: Api) -> None:
    base = api.submit()
    request = {"base_job": base["id"], "vary": {"seed": [5, 6], "duration_ms": [100.0, 300.0]}, "mode": "zip"}
    sweep = api.client.post("/v1/sweeps", json=request, headers=api.headers("alice")).json()
    assert [child["values"] for child in sweep["children"]] == [{"seed": 5, "duration_ms": 100.0}, {"seed": 6, "duration_ms": 300.0}]
    first, second = (child["id"] for child in sweep["children"])
    api.set_status(first, JobStatus.succeeded, metrics={"steps": 100}, progress_done=100, progress_total=100)
    api.set_status(second, JobStatus.running, lease_token="t" * 32, progress_done=50, progress_total=300)
    combined = api.client.get(f"/v1/jobs/{sweep['id']}", headers=api.headers("alice")).json()["progress"]
    assert (combined["done"], combined["total"]) == (150, 400)
    cancelled = api.client.post(f"/v1/jobs/{sweep['id']}/cancel", headers=api.headers("alice")).json()
    assert cancelled["status"] == "running"
    rows = {row["id"]: row for row in cancelled["children"]}
    assert rows[first]["status"] == "succeeded"
    assert rows[first]["metrics"] == {"steps": 100}
    with api.factory() as session:
        assert session.get(Job, second).cancel_requested is True
    # The worker stops the running child; the sweep then ends cancelled with its table of metrics.
    from service.jobs import refresh_sweep

    api.set_status(second, JobStatus.cancelled)
    with transaction(api.factory) as session:
        refresh_sweep(session, sweep["id"])
    final = api.client.get(f"/v1/jobs/{sweep['id']}", headers=api.headers("alice")).json()
    assert final["status"] == "cancelled"
    assert final["metrics"]["children"][0] == {"id": first, "values": {"seed": 5, "duration_ms": 100.0}, "status": "succeeded", "metrics": {"steps": 100}}


def test_sweep_bad_requests(api: Api) -> None:
    headers = api.headers("alice")
    too_many = {"base": simulation_spec(), "vary": {"seed": [1, 2, 3], "duration_ms": [100.0, 200.0]}}
    body = problem(api.client.post("/v1/sweeps", json=too_many, headers=headers), 422)
    assert (body["limit"], body["maximum"], body["value"]) == ("max_sweep_children", 4, 6)
    bad_path = {"base": simulation_spec(), "vary": {"network.nowhere.weight": [1.0]}}
    body = problem(api.client.post("/v1/sweeps", json=bad_path, headers=headers), 422)
    assert body["detail"] == "path 'network.nowhere.weight': the base spec has no key 'nowhere' there"
    bad_value = {"base": simulation_spec(), "vary": {"duration_ms": [100.0, -5.0]}}
    body = problem(api.client.post("/v1/sweeps", json=bad_value, headers=headers), 422)
    assert body["child"] == 1
    assert body["errors"][0]["path"] == "$.duration_ms"
    assert body["errors"][0]["rule"] == "greater_than"
    both = {"base": simulation_spec(), "base_job": "0" * 32, "vary": {"seed": [1]}}
    assert problem(api.client.post("/v1/sweeps", json=both, headers=headers), 422)["detail"] == (
        "give exactly one of base (a job spec) and base_job (the id of a job)"
    )
    other = api.submit("bob")
    body = problem(api.client.post("/v1/sweeps", json={"base_job": other["id"], "vary": {"seed": [1]}}, headers=headers), 404)
    unknown = problem(api.client.post("/v1/sweeps", json={"base": {}, "vary": {"seed": [1]}, "extra": 1}, headers=headers), 422)
    assert unknown["errors"][0]["path"] == "$.extra"
    with api.factory() as session:
        assert session.scalars(select(Job).where(Job.kind == "sweep")).all() == []
