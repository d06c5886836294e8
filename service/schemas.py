"""Request and response bodies of the REST API (other than job specs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Progress(BaseModel):
    """How far a job got, in samples (or steps, for a simulation without data)."""

    done: int = Field(description="units of work finished")
    total: int = Field(description="units of work in the whole job; 0 before the worker started it")
    fraction: float = Field(description="done / total, 0 when total is 0")
    rate: float | None = Field(None, description="units per second over the recent past")
    eta_s: float | None = Field(None, description="estimated seconds to the end")
    unit: str | None = Field(None, description="samples, or steps for a simulation without data")
    phase: str | None = Field(None, description="train, label, test or simulate")
    epoch: int | None = Field(None, description="the training epoch, from 0")


class ChildRow(BaseModel):
    """One child job of a sweep: the values it substitutes, its state and metrics."""

    id: str
    values: dict[str, Any]
    status: str
    progress: Progress
    metrics: dict[str, Any] | None


class JobPublic(BaseModel):
    """A job as the API shows it."""

    id: str
    kind: Literal["run", "sweep"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    owner: str
    name: str | None
    tags: list[str]
    queue: str
    parent_id: str | None
    sweep_values: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    progress: Progress
    estimate: dict[str, Any]
    metrics: dict[str, Any] | None
    steps_per_second: float | None
    error: str | None
    links: dict[str, str]
    children: list[ChildRow] | None = Field(None, description="the child jobs, for a sweep")


class JobList(BaseModel):
    """A page of jobs, newest first."""

    items: list[JobPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class ValidationResult(BaseModel):
    """The outcome of a dry run: the spec with defaults filled in and its estimates."""

    valid: Literal[True] = True
    spec: dict[str, Any]
    estimate: dict[str, Any]
    queue: str


class SweepCreate(BaseModel):
    """A parameter sweep: a base job and the values to vary.

    ``vary`` maps a JSON path in the spec (``$.network.connections.exc.weight.high``,
    ``epochs``, ``data.train_samples``) to the list of values it takes. With
    ``mode: grid`` every combination becomes a child job; with ``zip`` the
    lists (of equal length) are taken side by side.
    """

    model_config = ConfigDict(extra="forbid")

    base_job: str | None = Field(None, description="the id of an existing job whose spec is the base")
    base: dict[str, Any] | None = Field(None, description="a job spec used as the base")
    vary: dict[str, list[Any]] = Field(min_length=1, description="JSON path -> values")
    mode: Literal["grid", "zip"] = "grid"
    name: str | None = Field(None, max_length=200)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)


class Artifact(BaseModel):
    """A stored result file of a job."""

    name: str = Field(description="its path in the result layout, for example plots/raster.png")
    size: int = Field(description="bytes")
    sha256: str
    media_type: str
    created_at: datetime
    url: str


class ArtifactList(BaseModel):
    """The stored result files of a job."""

    items: list[Artifact]


class SpikeMonitorInfo(BaseModel):
    """A spike monitor of a job."""

    name: str
    dt: float = Field(description="step length in ms")
    shape: list[int]
    events: int


class SpikePage(BaseModel):
    """A page of spike records of one monitor.

    Record ``k`` means that flat neuron ``index[k]`` spiked in step ``step[k]``,
    which covers ``(step·dt, (step+1)·dt]`` ms; ``sample[k]`` is the sample
    being presented (absent for simulations without data).
    """

    monitor: str
    dt: float
    shape: list[int]
    step_start: int | None = Field(description="first step of the window (inclusive)")
    step_stop: int | None = Field(description="end of the window (exclusive)")
    step: list[int]
    index: list[int]
    sample: list[int] | None
    next_cursor: str | None


class Health(BaseModel):
    """Liveness or readiness with the state of each dependency."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
