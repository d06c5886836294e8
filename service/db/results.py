"""Reading and writing stored results: chunked blobs and spike records.

A blob (a parameter file, a checkpoint, a plot) is split into pieces of at
most ``chunk_bytes`` bytes. No single row then grows past what the database
handles well: SQLite caps a value at 1e9 bytes, PostgreSQL ``bytea`` at 1 GiB.
A byte range is served by reading only the pieces it touches.

Spike records are stored as chunks sorted by step. Each chunk row records the
steps ``[step_start, step_stop)`` it covers, so a window query reads only the
chunks that overlap the window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import Blob, BlobChunk, SpikeChunk, SpikeMonitor


# ----------------------------------------------------------------- blobs


def write_blob(
    session: Session, *, job_id: str, name: str, data: bytes, media_type: str, chunk_bytes: int
) -> Blob:
    """Store ``data`` as the blob ``name`` of a job, replacing an older one of that name.

    Args:
        session: the session whose transaction the write joins.
        job_id: the job the blob belongs to.
        name: the result-layout name, such as ``parameters.safetensors``.
        data: the content.
        media_type: the HTTP media type served for it.
        chunk_bytes: the largest piece stored in one row, in bytes.

    Returns:
        The new :class:`Blob` row with its size and SHA-256.
    """
    delete_blob(session, job_id=job_id, name=name)
    blob = Blob(
        job_id=job_id,
        name=name,
        media_type=media_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunk_bytes=chunk_bytes,
    )
    session.add(blob)
    session.flush()
    view = memoryview(data)
    for seq, offset in enumerate(range(0, len(data), chunk_bytes)):
        session.add(BlobChunk(blob_id=blob.id, seq=seq, data=bytes(view[offset : offset + chunk_bytes])))
    session.flush()
    return blob


def delete_blob(session: Session, *, job_id: str, name: str) -> None:
    """Delete the blob ``name`` of a job and its pieces, if it exists."""
    blob_id = session.scalar(select(Blob.id).where(Blob.job_id == job_id, Blob.name == name))
    if blob_id is not None:
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
        session.execute(delete(Blob).where(Blob.id == blob_id))


def find_blob(session: Session, *, job_id: str, name: str) -> Blob | None:
    """Return the blob ``name`` of a job, or ``None``."""
    return session.scalar(select(Blob).where(Blob.job_id == job_id, Blob.name == name))


def list_blobs(session: Session, *, job_id: str, prefix: str = "") -> list[Blob]:
    """Return a job's blobs whose names start with ``prefix``, sorted by name."""
    query = select(Blob).where(Blob.job_id == job_id).order_by(Blob.name)
    if prefix:
        query = query.where(Blob.name.startswith(prefix, autoescape=True))
    return list(session.scalars(query))


def iter_blob_bytes(session: Session, blob: Blob, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Yield the bytes ``[start, stop)`` of a blob, reading only the pieces that hold them.

    Args:
        session: an open session.
        blob: the blob row.
        start: the first byte, at least 0.
        stop: one past the last byte; the blob's size by default.
    """
    stop = blob.size if stop is None else min(stop, blob.size)
    if start >= stop:
        return
    first, last = start // blob.chunk_bytes, (stop - 1) // blob.chunk_bytes
    rows = session.execute(
        select(BlobChunk.seq, BlobChunk.data)
        .where(BlobChunk.blob_id == blob.id, BlobChunk.seq >= first, BlobChunk.seq <= last)
        .order_by(BlobChunk.seq)
    )
    for seq, data in rows:
        offset = seq * blob.chunk_bytes
        yield bytes(data[max(start - offset, 0) : stop - offset])


def read_blob(session: Session, blob: Blob) -> bytes:
    """Return the whole content of a blob, checked against its SHA-256.

    Raises:
        ValueError: if the stored pieces do not add up to the recorded hash.
    """
    data = b"".join(iter_blob_bytes(session, blob))
    if hashlib.sha256(data).hexdigest() != blob.sha256:
        raise ValueError(f"blob {blob.name!r} of job {blob.job_id} is corrupt: its SHA-256 differs from the one stored")
    return data


# ---------------------------------------------------------------- spikes


@dataclass(frozen=True)
class SpikeArrays:
    """Spike records as parallel int64 arrays, sorted by step within each chunk."""

    step: np.ndarray
    index: np.ndarray
    sample: np.ndarray | None

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def select(self, mask: np.ndarray | slice) -> SpikeArrays:
        return SpikeArrays(self.step[mask], self.index[mask], None if self.sample is None else self.sample[mask])

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {"step": self.step, "index": self.index}
        if self.sample is not None:
            arrays["sample"] = self.sample
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> SpikeArrays:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            sample = archive["sample"] if "sample" in archive.files else None
            return cls(archive["step"], archive["index"], sample)

    @classmethod
    def concatenate(cls, parts: Sequence[SpikeArrays], *, batched: bool) -> SpikeArrays:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty.copy(), empty.copy() if batched else None)
        sample = np.concatenate([part.sample for part in parts]) if batched else None
        return cls(np.concatenate([p.step for p in parts]), np.concatenate([p.index for p in parts]), sample)


def write_spikes(
    session: Session,
    *,
    job_id: str,
    monitor: str,
    records: SpikeArrays,
    dt: float,
    shape: Sequence[int],
    chunk_events: int,
) -> int:
    """Append spike records of one monitor as chunks of at most ``chunk_events`` records.

    The records are sorted by (step, sample, index) and cut into chunks, each
    of which records the steps it covers.

    Returns:
        The number of chunk rows written.

    Raises:
        ValueError: if the monitor was stored before with another ``dt``, shape
            or presence of sample numbers.
    """
    has_samples = records.sample is not None
    known = session.get(SpikeMonitor, (job_id, monitor))
    if known is None:
        session.add(
            SpikeMonitor(job_id=job_id, monitor=monitor, dt=float(dt), shape=[int(s) for s in shape], has_samples=has_samples)
        )
    elif known.dt != float(dt) or list(known.shape) != [int(s) for s in shape] or known.has_samples != has_samples:
        raise ValueError(
            f"monitor {monitor!r} of job {job_id} was stored with dt {known.dt} ms, shape {known.shape} and "
            f"samples={known.has_samples}, got dt {dt} ms, shape {list(shape)} and samples={has_samples}"
        )
    if len(records) == 0:
        return 0
    keys = [records.index] + ([] if records.sample is None else [records.sample]) + [records.step]
    ordered = records.select(np.lexsort(keys))
    written = 0
    for offset in range(0, len(ordered), chunk_events):
        piece = ordered.select(slice(offset, offset + chunk_events))
        session.add(
            SpikeChunk(
                job_id=job_id,
                monitor=monitor,
                step_start=int(piece.step[0]),
                step_stop=int(piece.step[-1]) + 1,
                events=len(piece),
                data=piece.to_npz(),
            )
        )
        written += 1
    session.flush()
    return written


def seal_spikes(session: Session, *, job_id: str) -> None:
    """Mark every stored spike chunk of a job as covered by the latest checkpoint."""
    session.execute(update(SpikeChunk).where(SpikeChunk.job_id == job_id, SpikeChunk.sealed.is_(False)).values(sealed=True))


def drop_unsealed_spikes(session: Session, *, job_id: str) -> int:
    """Delete the spike chunks written after the latest checkpoint; return how many."""
    result = session.execute(delete(SpikeChunk).where(SpikeChunk.job_id == job_id, SpikeChunk.sealed.is_(False)))
    return int(result.rowcount or 0)


def drop_all_spikes(session: Session, *, job_id: str) -> None:
    """Delete every spike record and monitor of a job."""
    session.execute(delete(SpikeChunk).where(SpikeChunk.job_id == job_id))
    session.execute(delete(SpikeMonitor).where(SpikeMonitor.job_id == job_id))


def list_monitors(session: Session, *, job_id: str) -> list[SpikeMonitor]:
    """Return the spike monitors of a job, sorted by name."""
    return list(session.scalars(select(SpikeMonitor).where(SpikeMonitor.job_id == job_id).order_by(SpikeMonitor.monitor)))


def count_spike_events(session: Session, *, job_id: str, monitor: str) -> int:
    """Return the number of stored records of a monitor."""
    total = session.scalar(
        select(func.coalesce(func.sum(SpikeChunk.events), 0)).where(
            SpikeChunk.job_id == job_id, SpikeChunk.monitor == monitor
        )
    )
    return int(total or 0)


@dataclass(frozen=True)
class SpikeCursor:
    """The end of a page of spike records: a chunk's position and an offset in its window selection."""

    step_start: int
    chunk_id: int
    offset: int

    def encode(self) -> str:
        raw = json.dumps([self.step_start, self.chunk_id, self.offset], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> SpikeCursor:
        """Parse a cursor from a previous page.

        Raises:
            ValueError: if ``text`` is not a cursor this service produced.
        """
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            values = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError) as error:
            raise ValueError("cursor is not one returned by a previous page") from error
        if not (isinstance(values, list) and len(values) == 3 and all(type(v) is int and v >= 0 for v in values)):
            raise ValueError("cursor is not one returned by a previous page")
        return cls(*values)


@dataclass(frozen=True)
class SpikePage:
    """One page of spike records and the cursor of the next page (``None`` at the end)."""

    records: SpikeArrays
    next_cursor: SpikeCursor | None


def query_spikes(
    session: Session,
    *,
    job_id: str,
    monitor: str,
    batched: bool,
    step_start: int | None,
    step_stop: int | None,
    neurons: np.ndarray | None,
    cursor: SpikeCursor | None,
    limit: int,
) -> SpikePage:
    """Return up to ``limit`` records of a monitor with ``step_start <= step < step_stop``.

    Only chunks whose step range overlaps the window are read. Records come
    in chunk order (chunks sorted by first step), sorted by step inside a
    chunk. A page ends after ``limit`` records, and its cursor resumes there.

    Args:
        session: an open session.
        job_id: the job.
        monitor: the monitor name.
        batched: whether the records carry sample numbers.
        step_start: the first step of the window, or ``None`` for no lower bound.
        step_stop: one past the last step of the window, or ``None``.
        neurons: sorted flat neuron indices to keep, or ``None`` for all.
        cursor: where the previous page ended, or ``None`` for the first page.
        limit: the most records to return, at least 1.
    """
    query = select(SpikeChunk.id, SpikeChunk.step_start, SpikeChunk.data).where(
        SpikeChunk.job_id == job_id, SpikeChunk.monitor == monitor
    )
    if step_start is not None:
        query = query.where(SpikeChunk.step_stop > step_start)
    if step_stop is not None:
        query = query.where(SpikeChunk.step_start < step_stop)
    if cursor is not None:
        query = query.where(
            or_(
                SpikeChunk.step_start > cursor.step_start,
                (SpikeChunk.step_start == cursor.step_start) & (SpikeChunk.id >= cursor.chunk_id),
            )
        )
    query = query.order_by(SpikeChunk.step_start, SpikeChunk.id).execution_options(yield_per=16)

    parts: list[SpikeArrays] = []
    collected = 0
    for chunk_id, chunk_start, data in session.execute(query):
        selected = _select_window(SpikeArrays.from_npz(data), step_start, step_stop, neurons)
        skip = cursor.offset if cursor is not None and chunk_id == cursor.chunk_id else 0
        remaining = selected.select(slice(skip, None))
        room = limit - collected
        if len(remaining) > room:
            parts.append(remaining.select(slice(0, room)))
            return SpikePage(
                SpikeArrays.concatenate(parts, batched=batched), SpikeCursor(chunk_start, chunk_id, skip + room)
            )
        parts.append(remaining)
        collected += len(remaining)
    return SpikePage(SpikeArrays.concatenate(parts, batched=batched), None)


def _select_window(
    records: SpikeArrays, step_start: int | None, step_stop: int | None, neurons: np.ndarray | None
) -> SpikeArrays:
    mask = np.ones(len(records), dtype=bool)
    if step_start is not None:
        mask &= records.step >= step_start
    if step_stop is not None:
        mask &= records.step < step_stop
    if neurons is not None:
        mask &= np.isin(records.index, neurons, assume_unique=False)
    return records.select(mask)


def ms_to_step_bound(time_ms: float, dt: float) -> int:
    """Convert a window bound in ms to the first step whose interval starts at or after it.

    Step ``t`` covers ``(t·dt, (t+1)·dt]``, so its start is ``t·dt``; a bound
    within 1e-6 relative tolerance of a step start counts as that step.
    """
    ratio = time_ms / dt
    return max(0, math.ceil(ratio - 1e-6 * max(1.0, abs(ratio))))
