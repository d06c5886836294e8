"""Shared pytest fixtures: seeding, device and dtype parametrisation, GPU skips, servers.

- Every test starts from the same random state (:func:`seed`, autouse).
- ``device`` and ``dtype`` fixtures parametrise a test over ``cpu``/``cuda``
  and ``float32``/``float64``; :func:`device_params` gives the same devices
  for ``@pytest.mark.parametrize``.
- Tests marked ``gpu`` are skipped where CUDA is unavailable, unless
  ``EMBER_REQUIRE_GPU=1``, which makes a missing GPU a collection error
  (for runs on a GPU machine that must not skip silently).
- ``redis_server`` and ``postgres_server`` start real servers once per
  session, ``private_redis`` and ``private_postgres`` once per test, and
  ``postgres_database`` gives each test an empty database (see
  ``tests/infra.py``). Where the binaries are missing they skip, except
  under ``CI=true``, where they fail.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import torch

# ``python -m pytest`` puts the repository on sys.path but plain ``pytest``
# does not; tests import the helpers as ``tests.infra`` either way.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.infra import MissingBinaryError, PostgresServer, RedisServer  # noqa: E402

#: The seed every test starts from.
SEED = 1234

#: Whether this run is CI, where a missing server binary is a failure.
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

_REQUIRE_GPU = os.environ.get("EMBER_REQUIRE_GPU", "").strip().lower() in {"1", "true", "yes"}

_database_counter = itertools.count(1)

# One intra-op thread: the suite's small tensors run slower with two threads
# on a 2-core machine, and the integration tests' servers need the other core.
torch.set_num_threads(1)


# ---------------------------------------------------------------------------
# Seeding


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed Python's, NumPy's and torch's global generators; return the seed.

    Code under test should take explicit generators (see :func:`generator`);
    this fixture only makes stray global draws repeatable.
    """
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    return SEED


@pytest.fixture
def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :data:`SEED`."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def np_rng(seed: int) -> np.random.Generator:
    """A NumPy ``Generator`` seeded with :data:`SEED`."""
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# Devices and dtypes


def cuda_available() -> bool:
    """Return whether torch can use a CUDA device."""
    return bool(torch.cuda.is_available())


def device_params(*, cuda: bool = True) -> list[object]:
    """Return ``pytest.param`` entries for ``cpu`` and, marked ``gpu``, ``cuda``.

    Use as ``@pytest.mark.parametrize("device", device_params())``; the
    ``cuda`` case is skipped where no GPU exists.

    Args:
        cuda: whether to include the ``cuda`` case (default ``True``).
    """
    params: list[object] = [pytest.param("cpu", id="cpu")]
    if cuda:
        params.append(pytest.param("cuda", id="cuda", marks=pytest.mark.gpu))
    return params


#: ``pytest.param`` entries for the floating-point dtypes tests cover.
DTYPE_PARAMS = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
]


@pytest.fixture(params=device_params())
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device under test: ``cpu``, and ``cuda`` where a GPU exists."""
    return torch.device(request.param)


@pytest.fixture(params=DTYPE_PARAMS)
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """The floating-point dtype under test: ``float32`` and ``float64``."""
    dtype_value: torch.dtype = request.param
    return dtype_value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA, or reject the run under ``EMBER_REQUIRE_GPU``."""
    if cuda_available():
        return
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_items and _REQUIRE_GPU:
        raise pytest.UsageError(
            f"EMBER_REQUIRE_GPU is set but torch sees no CUDA device, so {len(gpu_items)} gpu tests "
            "cannot run; unset EMBER_REQUIRE_GPU or run on a machine with a GPU"
        )
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False")
    for item in gpu_items:
        item.add_marker(skip)


# ---------------------------------------------------------------------------
# Servers


def _missing_binary(error: MissingBinaryError) -> NoReturn:
    """Skip the test, or fail it in CI, where every server binary must exist."""
    if IN_CI:
        pytest.fail(f"CI=true but a server binary is missing: {error}", pytrace=False)
    pytest.skip(str(error))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server shared by the whole session (``.url`` is database 0).

    Tests that stop or restart Redis use :func:`private_redis` instead; tests
    that need empty data call ``flushall()``.
    """
    try:
        server = RedisServer()
    except MissingBinaryError as error:
        _missing_binary(error)
    with server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the whole session (``.url`` is database ``ember``).

    Tests that need an empty database use :func:`postgres_database`; tests
    that stop or restart PostgreSQL use :func:`private_postgres`.
    """
    try:
        server = PostgresServer()
    except MissingBinaryError as error:
        _missing_binary(error)
    with server:
        yield server


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis server for this test alone, for tests that stop, kill or restart it."""
    try:
        server = RedisServer()
    except MissingBinaryError as error:
        _missing_binary(error)
    with server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test alone, for tests that stop, kill or restart it."""
    try:
        server = PostgresServer()
    except MissingBinaryError as error:
        _missing_binary(error)
    with server:
        yield server


@pytest.fixture
def postgres_database(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The SQLAlchemy URL of a new empty database, dropped after the test."""
    base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    name = f"t_{base}_{os.getpid()}_{next(_database_counter)}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)

