"""Property-based requests from the OpenAPI document: no input gives a 500.

Schemathesis generates requests for every operation from the API's own
OpenAPI schema (job specs included) and sends them to the app in-process,
on a SQLite database with messages recorded instead of sent.
"""

from __future__ import annotations

import warnings

import pytest

pytestmark = pytest.mark.integration

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from service.app import create_app  # noqa: E402
from service.testing import RecordingDispatcher, fresh_database, make_settings  # noqa: E402


def _app():
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="ember-schema-"))
    engine, factory = fresh_database(folder / "jobs.sqlite")
    app = create_app(make_settings(folder, max_concurrent_jobs=10_000), dispatcher=RecordingDispatcher(), engine=engine)
    from service.app import ensure_local_user

    ensure_local_user(factory)
    return app


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case) -> None:
    response = case.call()
    if case.formatted_path == "/readyz" and response.status_code == 503:
        return  # no worker runs here, so "not ready" is the correct response
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/problem+json"), response.headers
