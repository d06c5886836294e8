"""Helpers for the service and worker tests: small real specs, a recording dispatcher, apps.

They live here rather than in ``tests/`` so that several test modules can
import them without a shared conftest of their own.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.models import Base
from service.db.session import make_engine, make_session_factory

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client and warns
    # at import when only httpx is installed; the client works the same.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: F401  (re-exported)


def simulation_spec(*, duration_ms: float = 200.0, neurons: int = 5, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """Return a small valid simulate job: Poisson background drives LIF cells, spikes recorded.

    Args:
        duration_ms: simulated time in ms (dt = 1 ms, so also the step count).
        neurons: LIF cells in the population ``cells``.
        seed: the job seed.
        extra: more top-level spec fields (``tags``, ``checkpoint_every``, ...).
    """
    spec: dict[str, Any] = {
        "kind": "simulate",
        "duration_ms": duration_ms,
        "dt": 1.0,
        "seed": seed,
        "device": "cpu",
        "network": {
            "inputs": {"noise": {"type": "background", "shape": [20], "rate_hz": 40.0}},
            "populations": {"cells": {"type": "lif", "shape": [neurons]}},
            "connections": {"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 3.0}},
            "monitors": {"raster": {"type": "spikes", "target": "cells"}},
        },
    }
    spec.update(copy.deepcopy(extra))
    return spec


class RecordingDispatcher:
    """A dispatcher that keeps the messages instead of sending them to a broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, job_id: str, queue: str) -> None:
        self.sent.append((job_id, queue))


def fresh_database(path: Path) -> tuple[Engine, sessionmaker[Session]]:
    """Create a SQLite database at ``path`` with the current schema (no migrations)."""
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    return engine, make_session_factory(engine)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Return settings whose database and broker live under ``tmp_path``."""
    return Settings(data_dir=tmp_path / "data", **overrides)
