"""The service's view of a job spec: validation, limits, estimates and queue.

The API validates every submitted document with :class:`ember.spec.JobSpec`
(the same model ``ember run`` uses), then applies the rules only a shared
service needs: no local file paths, the recorded-data limit and the runtime
limit. Every failure becomes a 422 problem whose errors carry the JSON path,
the rule and the value.
"""

from __future__ import annotations

import math
from typing import Any

from ember.spec import JobSpec, Limits, SpecError, validate_spec
from ember.spec.monitors import SpikeMonitorSpec, StateMonitorSpec

from service.config import Settings
from service.problems import Problem

#: Bytes of one stored spike record: step, index and sample as int64.
SPIKE_RECORD_BYTES = 24
#: The mean firing rate, in Hz, assumed when estimating recorded spike data
#: before a job runs. It is far above typical cortical rates (1-20 Hz), so
#: the estimate is an upper estimate for most networks. The worker also stops
#: a job whose stored records actually exceed the limit.
ASSUMED_RATE_HZ = 100.0


def spec_problem(issues: list[dict[str, Any]], *, detail: str | None = None) -> Problem:
    """Build the 422 problem for an invalid spec from its issues."""
    if detail is None:
        first = issues[0]
        detail = f"{first['path']}: {first['message']}"
        if len(issues) > 1:
            detail += f" (and {len(issues) - 1} more error(s))"
    return Problem(422, "invalid-spec", "Invalid job spec", detail, errors=issues)


def validate_job_document(document: Any, *, settings: Settings, limits: Limits) -> JobSpec:
    """Validate a submitted job document for the service.

    Args:
        document: the parsed JSON body.
        settings: the service limits (recorded data, runtime).
        limits: the network size limits passed to :class:`JobSpec`.

    Returns:
        The validated spec.

    Raises:
        Problem: 422 with one error per invalid value.
    """
    try:
        spec = validate_spec(document, limits=limits)
    except SpecError as error:
        raise spec_problem([issue.as_dict() for issue in error.issues]) from None
    if spec.initial_parameters is not None:
        raise spec_problem(
            [
                {
                    "path": "$.initial_parameters",
                    "rule": "local_file_forbidden",
                    "message": "initial_parameters names a file on the machine that runs the job, which the "
                    "service never reads; remove it (use it with `ember run` only)",
                    "value": spec.initial_parameters,
                }
            ]
        )
    check_service_limits(spec, settings=settings)
    return spec


def check_service_limits(spec: JobSpec, *, settings: Settings) -> None:
    """Reject a spec whose estimated recorded data or run time exceeds the service limits.

    Raises:
        Problem: 422 naming the limit, its maximum and the estimated value.
    """
    recorded = estimate_recorded_bytes(spec)
    if recorded > settings.max_recorded_bytes:
        raise Problem(
            422,
            "limit-exceeded",
            "Limit exceeded",
            f"$.record: the job would record about {recorded:,} bytes, above the limit of "
            f"{settings.max_recorded_bytes:,} (EMBER_MAX_RECORDED_BYTES); record fewer samples or fewer monitors",
            errors=[
                {"path": "$.record", "rule": "limit_exceeded", "message": "estimated recorded data above the limit", "value": recorded}
            ],
            limit="max_recorded_bytes",
            maximum=settings.max_recorded_bytes,
            value=recorded,
        )
    seconds = spec.estimate().seconds
    if seconds > settings.max_runtime_s:
        raise Problem(
            422,
            "limit-exceeded",
            "Limit exceeded",
            f"$: the job is estimated to run {seconds:,.0f} s, above the limit of {settings.max_runtime_s:,.0f} s "
            "(EMBER_MAX_RUNTIME_S); run fewer samples or epochs",
            errors=[{"path": "$", "rule": "limit_exceeded", "message": "estimated run time above the limit", "value": seconds}],
            limit="max_runtime_s",
            maximum=settings.max_runtime_s,
            value=seconds,
        )


def recorded_steps(spec: JobSpec) -> int:
    """Return how many steps of the job the monitors record, per recorded batch row."""
    if spec.data is None:
        return int(math.floor((spec.duration_ms or 0.0) / spec.dt + 0.5))
    phases = spec.phase_samples()
    samples = sum(min(count, spec.record.samples) for phase, count in phases.items() if phase in spec.record.phases)
    return samples * spec.steps_per_sample


def estimate_recorded_bytes(spec: JobSpec) -> int:
    """Estimate the bytes of spike records and state records a job keeps.

    Spike monitors are counted at :data:`ASSUMED_RATE_HZ` per neuron over the
    recorded steps; state monitors at their full capacity.
    """
    shapes = spec.network.node_shapes()
    element = 8 if spec.dtype == "float64" else 4
    steps = recorded_steps(spec)
    spike_probability = min(1.0, ASSUMED_RATE_HZ * spec.dt / 1000.0)
    total = 0.0
    for monitor in spec.network.monitors.values():
        size = math.prod(shapes.get(monitor.target, (0,)))
        if isinstance(monitor, SpikeMonitorSpec):
            total += size * steps * spike_probability * SPIKE_RECORD_BYTES
        elif isinstance(monitor, StateMonitorSpec):
            total += monitor.capacity * size * max(spec.batch_size, spec.effective_eval_batch_size) * element
    return int(total)


def queue_for(spec: JobSpec) -> str:
    """Return the queue of a job: ``gpu`` for ``device: cuda``, else ``cpu``.

    ``auto`` goes to ``cpu``: a worker of that queue still uses a GPU when its
    machine has one.
    """
    return "gpu" if spec.device == "cuda" else "cpu"


def estimate_document(spec: JobSpec) -> dict[str, Any]:
    """Return the size, memory and time estimate of a job as JSON, plus recorded bytes."""
    estimate = spec.estimate().model_dump(mode="json")
    estimate["recorded_bytes"] = estimate_recorded_bytes(spec)
    return estimate


def normalized_document(spec: JobSpec) -> dict[str, Any]:
    """Return the spec as stored: every default filled in, JSON types only."""
    return spec.model_dump(mode="json")
