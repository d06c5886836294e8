"""SQLAlchemy models of users, tokens, jobs and their stored results.

The database is the source of truth for every job: its state, progress,
attempts and results. Large binary results (parameters, checkpoints, plots,
artifacts) are stored as :class:`Blob` rows split into bounded
:class:`BlobChunk` pieces. Spike records are stored as :class:`SpikeChunk`
rows, each covering a range of steps, so that a time-window query reads only
the chunks that overlap it. Nothing is ever stored with pickle.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned timezone-aware in UTC.

    SQLite has no time zones, so every timestamp is converted to UTC before it
    is written and tagged as UTC when it is read; PostgreSQL behaves the same.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; use timezone-aware UTC times")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class JobStatus(str, enum.Enum):
    """The states of a job; ``succeeded``, ``failed`` and ``cancelled`` are final."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE_STATES = frozenset({JobStatus.queued, JobStatus.running})


class JobKind(str, enum.Enum):
    """A job that runs a spec, or a sweep that groups child jobs."""

    run = "run"
    sweep = "sweep"


class Base(DeclarativeBase):
    """Declarative base of every Ember table."""


class User(Base):
    """A person or program that submits jobs."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Incremented by every submission; the update also locks the row, which
    # serialises one user's submissions so the concurrent-job quota holds.
    submissions: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    """An API token; only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, shown by `ember token list` so a
    # person can tell tokens apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class Job(Base):
    """A submitted job or sweep, with its state, progress and metrics."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_status_queue", "status", "queue"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.run.value)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # For a sweep child: the values it substitutes, keyed by their JSON path.
    sweep_values: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # A fresh random value per claim; every write of a running attempt
    # requires it, so a worker that lost its lease cannot overwrite results.
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempt_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Run time of the attempts that ended, in s; the runtime limit covers all attempts.
    run_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_version: Mapped[int] = mapped_column(Integer, default=0)
    # The phase, epoch and unit of the latest progress report.
    progress_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    steps_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)

    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    owner: Mapped[User] = relationship()

    @property
    def state(self) -> JobStatus:
        return JobStatus(self.status)


class JobTag(Base):
    """One tag of a job, in its own table so listing by tag uses an index."""

    __tablename__ = "job_tags"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class SpikeMonitor(Base):
    """A spike monitor of a job: its step length, population shape and whether records carry samples."""

    __tablename__ = "spike_monitors"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    monitor: Mapped[str] = mapped_column(String(128), primary_key=True)
    dt: Mapped[float] = mapped_column(Float)
    shape: Mapped[list[int]] = mapped_column(JSON)
    # Whether the records carry sample numbers (jobs with data do).
    has_samples: Mapped[bool] = mapped_column(Boolean, default=False)


class SpikeChunk(Base):
    """Spike events of one monitor over the steps ``[step_start, step_stop)``.

    ``data`` is an ``.npz`` archive (no pickled objects) of int64 arrays
    ``step`` and ``index`` and, for batched runs, ``sample``, sorted by step.
    A chunk is ``sealed`` once a later checkpoint was committed. An attempt
    that resumes from that checkpoint deletes the unsealed chunks, because the
    resumed run records them again.
    """

    __tablename__ = "spike_chunks"
    __table_args__ = (Index("ix_spike_chunks_window", "job_id", "monitor", "step_start"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    monitor: Mapped[str] = mapped_column(String(128))
    step_start: Mapped[int] = mapped_column(BigInteger)
    step_stop: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Blob(Base):
    """A stored result file of a job, named as in the result layout.

    Names follow ``ember run --out DIR``: ``metrics.json``,
    ``parameters.safetensors``, ``checkpoint.safetensors``,
    ``checkpoint.json``, ``plots/NAME.png`` and ``artifacts/NAME``.
    """

    __tablename__ = "blobs"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_blobs_job_name"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    chunk_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlobChunk(Base):
    """Piece ``seq`` of a blob, each at most ``Blob.chunk_bytes`` long."""

    __tablename__ = "blob_chunks"

    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class WorkerHeartbeat(Base):
    """A live worker process and the queues it consumes, for ``/readyz``."""

    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    queues: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
