"""Results of a job: spike records, parameters, artifacts and plots."""

from __future__ import annotations

import io
import re
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from service.api.deps import ContextDep, OwnedJob, SessionDep
from service.api.downloads import blob_response
from service.db import results
from service.problems import Problem, invalid_parameter, not_found
from service.schemas import Artifact, ArtifactList, SpikeMonitorInfo, SpikePage

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])

_NEURONS_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
#: The maximum number of neuron indices a `neurons` filter may expand to.
MAX_NEURON_FILTER = 1_000_000
#: The maximum number of records in one JSON page and in one .npz page.
MAX_JSON_RECORDS = 1_000_000
MAX_NPZ_RECORDS = 20_000_000


def parse_neurons(text: str, size: int) -> np.ndarray:
    """Parse a neuron filter such as ``0-9,42`` (inclusive ranges) into sorted flat indices.

    Raises:
        Problem: 422 when the text is malformed, a range is reversed, an index
            is outside the population or the filter is too large.
    """
    compact = text.replace(" ", "")
    if not _NEURONS_RE.match(compact):
        raise invalid_parameter("neurons", "invalid_format", "use flat indices and inclusive ranges such as 0-9,42", text[:200])
    pieces = []
    total = 0
    for part in compact.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise invalid_parameter("neurons", "reversed_range", f"range {part} ends before it starts", part)
        if high >= size:
            raise invalid_parameter(
                "neurons", "out_of_range", f"index {high} is outside the population of {size} neurons (0 to {size - 1})", high
            )
        total += high - low + 1
        if total > MAX_NEURON_FILTER:
            raise invalid_parameter("neurons", "too_many", f"the filter selects more than {MAX_NEURON_FILTER:,} neurons", text[:200])
        pieces.append(np.arange(low, high + 1, dtype=np.int64))
    return np.unique(np.concatenate(pieces))


@router.get("/spikes/monitors", response_model=list[SpikeMonitorInfo], summary="List a job's spike monitors")
def list_spike_monitors(job: OwnedJob, session: SessionDep) -> list[SpikeMonitorInfo]:
    """Return the spike monitors with stored records, with dt, shape and record counts."""
    return [
        SpikeMonitorInfo(
            name=monitor.monitor,
            dt=monitor.dt,
            shape=list(monitor.shape),
            events=results.count_spike_events(session, job_id=job.id, monitor=monitor.monitor),
        )
        for monitor in results.list_monitors(session, job_id=job.id)
    ]


@router.get(
    "/spikes",
    response_model=SpikePage,
    summary="Read spike records in a time window",
    responses={200: {"content": {"application/x-npz": {}}, "description": "JSON, or .npz with format=npz"}},
)
def get_spikes(
    job: OwnedJob,
    session: SessionDep,
    monitor: Annotated[str | None, Query(max_length=128, description="the monitor; optional when the job has one")] = None,
    t_start: Annotated[float | None, Query(ge=0, description="window start, in `unit` (inclusive)")] = None,
    t_stop: Annotated[float | None, Query(ge=0, description="window end, in `unit` (exclusive)")] = None,
    unit: Annotated[Literal["ms", "steps"], Query(description="unit of t_start and t_stop")] = "ms",
    neurons: Annotated[str | None, Query(max_length=10_000, description="flat indices and inclusive ranges, e.g. 0-9,42")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_NPZ_RECORDS, description="records per page")] = 100_000,
    format: Annotated[Literal["json", "npz"], Query(description="json, or npz as in spikes/MONITOR.npz")] = "json",
) -> SpikePage | Response:
    """Return spike records of one monitor, optionally in a window and for some neurons.

    With ``unit=steps`` a record at step ``t`` lies in the window when
    ``t_start <= t < t_stop``. With ``unit=ms`` the bounds become the steps
    ``ceil(t_start / dt)`` and ``ceil(t_stop / dt)``, so the window contains
    the steps whose interval ``(t·dt, (t+1)·dt]`` starts in
    ``[t_start, t_stop)``. Only the stored chunks that overlap the window are
    read. Records come in the order the job stored them, sorted by step
    within each stored chunk; the runner stores chunks in time order. A page
    ends after ``limit`` records.
    """
    monitors = {m.monitor: m for m in results.list_monitors(session, job_id=job.id)}
    if not monitors:
        raise Problem(404, "not-found", "Not found", f"job {job.id} has no spike records (status {job.status})")
    if monitor is None:
        if len(monitors) > 1:
            raise invalid_parameter("monitor", "missing", f"the job has several monitors; name one of {', '.join(sorted(monitors))}", None)
        monitor = next(iter(monitors))
    if monitor not in monitors:
        raise not_found("monitor", monitor)
    info = monitors[monitor]
    if format == "json" and limit > MAX_JSON_RECORDS:
        raise invalid_parameter("limit", "less_than_equal", f"JSON pages hold at most {MAX_JSON_RECORDS:,} records; use format=npz for more", limit)
    if t_start is not None and t_stop is not None and t_stop <= t_start:
        raise invalid_parameter("t_stop", "greater_than", f"t_stop must be above t_start ({t_start})", t_stop)
    step_start = step_stop = None
    for name, value in (("t_start", t_start), ("t_stop", t_stop)):
        if value is None:
            continue
        if unit == "steps" and not float(value).is_integer():
            raise invalid_parameter(name, "whole_steps", "with unit=steps the bound must be a whole number", value)
        bound = int(value) if unit == "steps" else results.ms_to_step_bound(value, info.dt)
        if bound > 2**62:
            raise invalid_parameter(name, "less_than_equal", "the bound is beyond any step a job can have", value)
        if name == "t_start":
            step_start = bound
        else:
            step_stop = bound
    size = int(np.prod(info.shape))
    neuron_filter = parse_neurons(neurons, size) if neurons else None
    try:
        position = results.SpikeCursor.decode(cursor) if cursor else None
    except ValueError as error:
        raise invalid_parameter("cursor", "invalid_cursor", str(error), cursor) from None
    page = results.query_spikes(
        session,
        job_id=job.id,
        monitor=monitor,
        batched=info.has_samples,
        step_start=step_start,
        step_stop=step_stop,
        neurons=neuron_filter,
        cursor=position,
        limit=limit,
    )
    next_cursor = page.next_cursor.encode() if page.next_cursor else None
    records = page.records
    if format == "npz":
        arrays = {"step": records.step, "index": records.index, "dt": np.float64(info.dt), "shape": np.asarray(info.shape, dtype=np.int64)}
        if records.sample is not None:
            arrays["sample"] = records.sample
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        headers = {"Content-Disposition": f'attachment; filename="{monitor}.npz"'}
        if next_cursor:
            headers["Ember-Next-Cursor"] = next_cursor
        return Response(buffer.getvalue(), media_type="application/x-npz", headers=headers)
    return SpikePage(
        monitor=monitor,
        dt=info.dt,
        shape=list(info.shape),
        step_start=step_start,
        step_stop=step_stop,
        step=records.step.tolist(),
        index=records.index.tolist(),
        sample=None if records.sample is None else records.sample.tolist(),
        next_cursor=next_cursor,
    )


@router.get(
    "/parameters",
    summary="Download the learned parameters (safetensors)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"}},
)
def get_parameters(job: OwnedJob, session: SessionDep, context: ContextDep, request: Request) -> Response:
    """Return ``parameters.safetensors``: every learned tensor (``CONNECTION.weight``, ...)."""
    blob = results.find_blob(session, job_id=job.id, name="parameters.safetensors")
    if blob is None:
        raise Problem(404, "not-found", "Not found", f"job {job.id} has no stored parameters (status {job.status})")
    return blob_response(context.factory, blob, request, filename=f"{job.id}-parameters.safetensors")


@router.get("/artifacts", response_model=ArtifactList, summary="List stored result files")
def list_artifacts(job: OwnedJob, session: SessionDep) -> ArtifactList:
    """Return every stored result file with its size and SHA-256."""
    return ArtifactList(
        items=[
            Artifact(
                name=blob.name,
                size=blob.size,
                sha256=blob.sha256,
                media_type=blob.media_type,
                created_at=blob.created_at,
                url=f"/v1/jobs/{job.id}/artifacts/{blob.name}",
            )
            for blob in results.list_blobs(session, job_id=job.id)
        ]
    )


@router.get(
    "/artifacts/{name:path}",
    summary="Download a stored result file (range requests supported)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"}, 416: {"description": "range outside the file"}},
)
def get_artifact(job: OwnedJob, name: str, session: SessionDep, context: ContextDep, request: Request) -> Response:
    """Return one stored file; ``Range: bytes=A-B`` gives 206 with that part."""
    blob = results.find_blob(session, job_id=job.id, name=name) if len(name) <= 255 else None
    if blob is None:
        raise not_found("artifact", name[:255])
    return blob_response(context.factory, blob, request, filename=name.rsplit("/", 1)[-1])


@router.get(
    "/plots/{name}.png",
    summary="Download a plot",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_plot(job: OwnedJob, name: str, session: SessionDep, context: ContextDep, request: Request) -> Response:
    """Return ``plots/NAME.png`` (raster, weights, delays, accuracy, ... as the job drew them)."""
    blob = results.find_blob(session, job_id=job.id, name=f"plots/{name}.png") if len(name) <= 128 else None
    if blob is None:
        names = [b.name.removeprefix("plots/").removesuffix(".png") for b in results.list_blobs(session, job_id=job.id, prefix="plots/")]
        detail = f"job {job.id} has no plot {name[:128]!r}; plots: {', '.join(names) or 'none yet'}"
        raise Problem(404, "not-found", "Not found", detail)
    return blob_response(context.factory, blob, request, filename=f"{name}.png")
