"""Service and worker settings, read from ``EMBER_*`` environment variables.

Every setting can also be passed to :class:`Settings` directly, which is what
tests do. Without any configuration the settings describe the embedded
default: a SQLite database and a SQLite broker under ``./ember-data/``, the API
on 127.0.0.1:8000 and authentication off.

The size limits of a network (``EMBER_MAX_NEURONS``, ``EMBER_MAX_SYNAPSES``,
``EMBER_MAX_STEPS``, ``EMBER_MAX_MEMORY_BYTES``, ...) belong to
:class:`ember.spec.limits.Limits`, which reads the same environment; the
settings here add the limits only a shared service needs.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Queues a worker can consume; a job goes to ``gpu`` when its device is CUDA.
QUEUES = ("cpu", "gpu")


class Settings(BaseSettings):
    """Settings of the API, the workers and the embedded deployment.

    Attributes:
        data_dir: the folder of the embedded database and broker files.
        database_url: the SQLAlchemy URL of the job database; by default
            ``sqlite:///DATA_DIR/ember.sqlite``.
        broker_url: the Celery broker URL; by default Celery's SQLAlchemy
            transport on ``DATA_DIR/broker.sqlite``.
        host: the address the API binds to.
        port: the TCP port of the API.
        auth_enabled: whether requests need ``Authorization: Bearer TOKEN``.
            Without authentication every request acts as the admin user
            ``local``, so the API then only binds to a loopback address.
        max_body_bytes: the largest request body accepted, in bytes.
        max_concurrent_jobs: the maximum number of queued plus running jobs one user may
            have at once; more submissions get 429.
        max_recorded_bytes: the maximum bytes of spike records a job may keep,
            as estimated before it runs.
        max_runtime_s: the maximum run time of a job, in s, over all its attempts;
            the worker stops a job that exceeds it and marks it failed.
        max_sweep_children: the maximum number of child jobs one sweep may expand into.
        max_attempts: how many times a job may be started before it is marked
            failed; a worker that dies mid-job costs one attempt.
        progress_interval_s: the longest time, in s, between two progress
            writes of a running job (written also after each sample when due).
        heartbeat_interval_s: how often, in s, a running job and each worker
            write a heartbeat.
        job_lease_s: a running job whose heartbeat is older than this many
            seconds is taken to have lost its worker and is queued again.
        requeue_after_s: a queued job whose message was sent more than this
            many seconds ago gets its message sent again (messages lost by the
            broker are then recovered; duplicates are harmless).
        checkpoint_interval_s: the aimed time between two checkpoints of a
            job whose spec sets no ``checkpoint_every``, in s; the worker turns
            it into a sample count with the job's time estimate.
        spike_chunk_events: the maximum number of spike events stored in one chunk row.
        blob_chunk_bytes: the largest piece, in bytes, of a stored blob.
        broker_visibility_timeout_s: seconds before the Redis broker hands an
            unacknowledged message to another worker; kept above
            ``max_runtime_s`` so a long job is not started twice.
        ready_queues: queues that need a live worker for ``/readyz`` to pass.
        sse_poll_interval_s: how often, in s, the progress stream polls the
            database.
    """

    model_config = SettingsConfigDict(env_prefix="EMBER_", extra="ignore")

    data_dir: Path = Path("ember-data")
    database_url: str = ""
    broker_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    auth_enabled: bool = False

    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    max_concurrent_jobs: int = Field(8, ge=1)
    max_recorded_bytes: int = Field(2 * 1024**3, ge=1)
    max_runtime_s: float = Field(6 * 3600.0, gt=0)
    max_sweep_children: int = Field(64, ge=1)
    max_attempts: int = Field(3, ge=1)

    progress_interval_s: float = Field(2.0, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    job_lease_s: float = Field(60.0, gt=0)
    requeue_after_s: float = Field(600.0, gt=0)
    checkpoint_interval_s: float = Field(300.0, gt=0)
    spike_chunk_events: int = Field(65536, ge=16)
    blob_chunk_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    broker_visibility_timeout_s: float = Field(0.0, ge=0)
    ready_queues: str = "cpu"
    sse_poll_interval_s: float = Field(0.5, gt=0)

    @field_validator("ready_queues")
    @classmethod
    def _check_queues(cls, value: str) -> str:
        queues = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in queues if name not in QUEUES]
        if unknown:
            raise ValueError(f"unknown queue {unknown[0]!r}; valid queues are {', '.join(QUEUES)}")
        return ",".join(queues)

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'ember.sqlite'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"
        if self.broker_visibility_timeout_s <= self.max_runtime_s:
            # A message must stay invisible longer than the longest job, or
            # Redis hands a running job to a second worker.
            self.broker_visibility_timeout_s = self.max_runtime_s + 3600.0
        if self.job_lease_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"job_lease_s ({self.job_lease_s} s) must exceed twice heartbeat_interval_s "
                f"({self.heartbeat_interval_s} s), or live jobs would be taken for lost"
            )
        return self

    @property
    def queue_list(self) -> list[str]:
        """The queues of ``ready_queues`` as a list."""
        return self.ready_queues.split(",") if self.ready_queues else []

    def uses_sqlite_files(self) -> bool:
        """Return whether the database or the broker lives in a file under ``data_dir``."""
        return self.database_url.startswith("sqlite") or self.broker_url.startswith("sqla+sqlite")

    def check_bind(self) -> None:
        """Reject a public bind address while authentication is off.

        Raises:
            ValueError: if ``host`` is not a loopback address and
                ``auth_enabled`` is false.
        """
        if self.auth_enabled or is_loopback(self.host):
            return
        raise ValueError(
            f"refusing to bind {self.host} with authentication off: anyone who can reach that "
            "address could submit jobs and read every result. Set EMBER_AUTH_ENABLED=true and "
            "create tokens with `ember token create --user NAME`, or bind 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names only the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
