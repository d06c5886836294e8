"""A :class:`ember.results.ResultStore` that writes into the job database.

Spike records and checkpoints are written as they come, each in its own
short transaction, so a job that dies keeps what it recorded and resumes from
its last checkpoint. Final results (metrics, parameters, plots, artifacts
and the finished checkpoint) are held in memory and written by
:meth:`DatabaseStore.finalize` in the same transaction as the job's final
state, so a job is never ``succeeded`` without its results, nor has final
results while it still counts as running.

Every write first checks the job's lease token: a worker whose job was taken
over by another worker (after a missed heartbeat) gets :class:`LeaseLost`
and cannot overwrite the other worker's results.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import torch
from ember.results import PNG_SIGNATURE, SpikeChunk, check_file_name, dumps_json
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import results
from service.db.models import Job, JobStatus, SpikeChunk as SpikeChunkRow, utcnow

logger = logging.getLogger(__name__)

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
SAFETENSORS_MEDIA_TYPE = "application/octet-stream"


class LeaseLost(RuntimeError):
    """The job is no longer this worker's: it was cancelled, finished or taken over."""


class RecordedDataLimitExceeded(RuntimeError):
    """The job's stored spike records went past ``EMBER_MAX_RECORDED_BYTES``."""


def _contiguous_cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor {name!r} must be a torch.Tensor, got {type(tensor).__name__}")
        converted[name] = tensor.detach().to("cpu").contiguous().clone()
    return converted


class DatabaseStore:
    """The result store of one attempt of one job.

    Args:
        factory: the session factory of the job database.
        job_id: the job.
        lease_token: the token of this worker's claim.
        chunk_bytes: the largest blob piece, in bytes.
        spike_chunk_events: the maximum number of records per stored spike chunk.
        max_recorded_bytes: the limit on stored spike bytes; ``None`` for none.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        job_id: str,
        lease_token: str,
        *,
        chunk_bytes: int = 4 * 1024 * 1024,
        spike_chunk_events: int = 65536,
        max_recorded_bytes: int | None = None,
    ) -> None:
        self.factory = factory
        self.job_id = job_id
        self.lease_token = lease_token
        self.chunk_bytes = chunk_bytes
        self.spike_chunk_events = spike_chunk_events
        self.max_recorded_bytes = max_recorded_bytes
        self.pending: dict[str, tuple[bytes, str]] = {}
        self.pending_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------ leases

    def _hold_lease(self, session: Session) -> None:
        """Refresh the heartbeat, or raise :class:`LeaseLost` if the job is no longer ours."""
        result = session.execute(
            update(Job)
            .where(Job.id == self.job_id, Job.lease_token == self.lease_token, Job.status == JobStatus.running.value)
            .values(heartbeat_at=utcnow())
        )
        if result.rowcount != 1:
            raise LeaseLost(f"job {self.job_id} is no longer held by this worker")

    # ----------------------------------------------------------- attempts

    def prepare_attempt(self) -> bool:
        """Remove what a crashed earlier attempt wrote after its last checkpoint.

        Returns:
            Whether a checkpoint exists (the attempt resumes from it).
        """
        with self.factory() as session, session.begin():
            self._hold_lease(session)
            has_checkpoint = results.find_blob(session, job_id=self.job_id, name=CHECKPOINT_META) is not None
            if has_checkpoint:
                dropped = results.drop_unsealed_spikes(session, job_id=self.job_id)
                if dropped:
                    logger.info("job %s: dropped %d spike chunks written after the last checkpoint", self.job_id, dropped)
            else:
                results.drop_all_spikes(session, job_id=self.job_id)
        return has_checkpoint

    # ------------------------------------------------------------ writes

    def put_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Hold the metrics until :meth:`finalize`."""
        data = dumps_json(dict(metrics))
        self.pending_metrics = json.loads(data)
        self.pending["metrics.json"] = (data, "application/json")

    def put_parameters(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Hold ``parameters.safetensors`` until :meth:`finalize`."""
        data = save_safetensors(_contiguous_cpu(tensors), metadata={"format": "ember-parameters"})
        self.pending["parameters.safetensors"] = (data, SAFETENSORS_MEDIA_TYPE)

    def put_plot(self, name: str, png: bytes) -> None:
        """Hold ``plots/NAME.png`` until :meth:`finalize`."""
        if bytes(png[:8]) != PNG_SIGNATURE:
            raise ValueError(f"plot {name!r} is not PNG data (the PNG signature is missing)")
        self.pending[f"plots/{check_file_name(name, 'plot')}.png"] = (bytes(png), "image/png")

    def put_artifact(self, name: str, data: bytes) -> None:
        """Hold ``artifacts/NAME`` until :meth:`finalize`."""
        self.pending[f"artifacts/{check_file_name(name, 'artifact')}"] = (bytes(data), "application/octet-stream")

    def put_spikes(self, monitor: str, chunk: SpikeChunk) -> None:
        """Store spike records now, in chunks sorted by step.

        Raises:
            RecordedDataLimitExceeded: if the job's stored records would pass
                ``max_recorded_bytes``.
            LeaseLost: if the job is no longer this worker's.
        """
        check_file_name(monitor, "monitor")
        records = results.SpikeArrays(chunk.step, chunk.index, chunk.sample)
        with self.factory() as session, session.begin():
            self._hold_lease(session)
            if self.max_recorded_bytes is not None:
                stored = int(
                    session.scalar(
                        select(func.coalesce(func.sum(SpikeChunkRow.events), 0)).where(SpikeChunkRow.job_id == self.job_id)
                    )
                    or 0
                )
                record_bytes = 24 if chunk.sample is not None else 16
                total = (stored + len(chunk)) * record_bytes
                if total > self.max_recorded_bytes:
                    raise RecordedDataLimitExceeded(
                        f"the job's spike records reached {total:,} bytes, above the limit of "
                        f"{self.max_recorded_bytes:,} (EMBER_MAX_RECORDED_BYTES); record fewer samples or monitors"
                    )
            results.write_spikes(
                session,
                job_id=self.job_id,
                monitor=monitor,
                records=records,
                dt=chunk.dt,
                shape=chunk.shape,
                chunk_events=self.spike_chunk_events,
            )

    def save_checkpoint(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Store a checkpoint and seal the spike records written before it.

        A checkpoint marked ``finished`` is the end state of the job; it is
        held for :meth:`finalize` like the other final results.
        """
        data = save_safetensors(_contiguous_cpu(tensors), metadata={"format": "ember-checkpoint"})
        record = {"meta": json.loads(dumps_json(dict(meta))), "tensors_sha256": hashlib.sha256(data).hexdigest()}
        meta_bytes = dumps_json(record)
        if meta.get("finished"):
            self.pending[CHECKPOINT_TENSORS] = (data, SAFETENSORS_MEDIA_TYPE)
            self.pending[CHECKPOINT_META] = (meta_bytes, "application/json")
            return
        with self.factory() as session, session.begin():
            self._hold_lease(session)
            self._write_checkpoint(session, data, meta_bytes)
        logger.info("job %s: checkpoint saved (%d bytes)", self.job_id, len(data))

    def _write_checkpoint(self, session: Session, data: bytes, meta_bytes: bytes) -> None:
        results.write_blob(
            session, job_id=self.job_id, name=CHECKPOINT_TENSORS, data=data, media_type=SAFETENSORS_MEDIA_TYPE, chunk_bytes=self.chunk_bytes
        )
        results.write_blob(
            session, job_id=self.job_id, name=CHECKPOINT_META, data=meta_bytes, media_type="application/json", chunk_bytes=self.chunk_bytes
        )
        results.seal_spikes(session, job_id=self.job_id)

    def write_pending(self, session: Session) -> int:
        """Write the held final results inside the caller's transaction; return how many files."""
        for name, (data, media_type) in self.pending.items():
            results.write_blob(session, job_id=self.job_id, name=name, data=data, media_type=media_type, chunk_bytes=self.chunk_bytes)
        if CHECKPOINT_META in self.pending:
            results.seal_spikes(session, job_id=self.job_id)
        count = len(self.pending)
        self.pending = {}
        return count

    # ------------------------------------------------------------- reads

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Return the last stored checkpoint, or ``None``.

        Raises:
            ValueError: if the tensors do not match the SHA-256 recorded with them.
        """
        with self.factory() as session:
            meta_blob = results.find_blob(session, job_id=self.job_id, name=CHECKPOINT_META)
            tensor_blob = results.find_blob(session, job_id=self.job_id, name=CHECKPOINT_TENSORS)
            if meta_blob is None or tensor_blob is None:
                return None
            record = json.loads(results.read_blob(session, meta_blob))
            data = results.read_blob(session, tensor_blob)
        if record.get("tensors_sha256") != hashlib.sha256(data).hexdigest():
            raise ValueError(f"job {self.job_id}: the stored checkpoint tensors do not match checkpoint.json")
        return load_safetensors(data), record["meta"]

    def read_spikes(self, monitor: str) -> SpikeChunk:
        """Return every stored record of ``monitor`` as one chunk, sorted and without duplicates.

        Raises:
            KeyError: if the job has no records of ``monitor``.
        """
        with self.factory() as session:
            info = next((m for m in results.list_monitors(session, job_id=self.job_id) if m.monitor == monitor), None)
            if info is None:
                raise KeyError(f"job {self.job_id} has no spike records of monitor {monitor!r}")
            page = results.query_spikes(
                session,
                job_id=self.job_id,
                monitor=monitor,
                batched=info.has_samples,
                step_start=None,
                step_stop=None,
                neurons=None,
                cursor=None,
                limit=2**62,
            )
            chunk = SpikeChunk(page.records.step, page.records.index, page.records.sample, info.dt, tuple(info.shape))
        return chunk.canonical()


def read_parameters(factory: sessionmaker[Session], job_id: str) -> dict[str, torch.Tensor] | None:
    """Return the stored learned tensors of a job, or ``None``."""
    with factory() as session:
        blob = results.find_blob(session, job_id=job_id, name="parameters.safetensors")
        return None if blob is None else load_safetensors(results.read_blob(session, blob))

