"""Where the results of a job go: the store protocol and the directory store.

A job writes its results through a :class:`ResultStore`. :class:`DirectoryStore`
writes the result layout of ``ember run --out DIR``::

    DIR/metrics.json                 the job's metrics
    DIR/parameters.safetensors       learned tensors: CONNECTION.weight, CONNECTION.delay,
                                     POPULATION.threshold, ...
    DIR/spikes/MONITOR.npz           step, index (int64) and sample (int64); dt and shape
    DIR/checkpoint.safetensors       the state needed to resume
    DIR/checkpoint.json              progress and metadata of that state
    DIR/plots/NAME.png               figures
    DIR/artifacts/NAME               other files (the spec, logs)

Nothing here is ever read with pickle: tensors use safetensors, arrays use
``.npz`` loaded with ``allow_pickle=False``, metadata uses JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def check_file_name(name: str, what: str) -> str:
    """Return ``name`` if it is safe as a single file name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _FILE_NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"{what} name {name!r} is invalid: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter, digit or '_', without '..'"
        )
    return name


@dataclass(frozen=True)
class SpikeChunk:
    """A batch of spike records of one monitor.

    Each record ``k`` states that flat neuron ``index[k]`` spiked at step
    ``step[k]`` while sample ``sample[k]`` was being simulated. Steps are the
    network's step counter (step ``t`` covers ``(t·dt, (t+1)·dt]`` ms), which
    restarts at 0 whenever the network state is reset: at the start of every
    sample when the job resets between samples, else at the start of the job
    and at every change of batch size. Samples are numbered in the order the
    job presents them, over all its phases.

    Args:
        step: step indices, int64, shape ``(n,)``.
        index: flat neuron indices in C order of ``shape``, int64, shape ``(n,)``.
        sample: sample numbers, int64, shape ``(n,)``; ``None`` when the job
            has no samples (a plain simulation).
        dt: the step length in ms.
        shape: the shape of the monitored population.

    Raises:
        ValueError: if the arrays differ in length, are not one-dimensional,
            or an index lies outside the population.
    """

    step: np.ndarray
    index: np.ndarray
    sample: np.ndarray | None
    dt: float
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", np.ascontiguousarray(self.step, dtype=np.int64))
        object.__setattr__(self, "index", np.ascontiguousarray(self.index, dtype=np.int64))
        if self.sample is not None:
            object.__setattr__(self, "sample", np.ascontiguousarray(self.sample, dtype=np.int64))
        object.__setattr__(self, "shape", tuple(int(size) for size in self.shape))
        object.__setattr__(self, "dt", float(self.dt))
        arrays = {"step": self.step, "index": self.index}
        if self.sample is not None:
            arrays["sample"] = self.sample
        for name, array in arrays.items():
            if array.ndim != 1:
                raise ValueError(f"SpikeChunk.{name} must be one-dimensional, got shape {array.shape}")
            if array.shape != self.step.shape:
                raise ValueError(
                    f"SpikeChunk arrays must have one length, got step {self.step.shape[0]} and {name} {array.shape[0]}"
                )
        size = math.prod(self.shape)
        if self.index.size and (self.index.min() < 0 or self.index.max() >= size):
            raise ValueError(f"SpikeChunk.index must lie in [0, {size}) for shape {self.shape}")
        if not math.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"SpikeChunk.dt must be a step length above 0 ms, got {self.dt!r}")

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def times_ms(self) -> np.ndarray:
        """Return the end of each record's step in ms, ``(step + 1) * dt``."""
        return (self.step + 1).astype(np.float64) * self.dt

    @classmethod
    def concatenate(cls, chunks: list[SpikeChunk]) -> SpikeChunk:
        """Join chunks of one monitor, in order.

        Raises:
            ValueError: if the chunks disagree on ``dt``, ``shape`` or on having samples.
        """
        if not chunks:
            raise ValueError("cannot concatenate an empty list of spike chunks")
        first = chunks[0]
        for chunk in chunks[1:]:
            if chunk.dt != first.dt or chunk.shape != first.shape or (chunk.sample is None) != (first.sample is None):
                raise ValueError(
                    f"spike chunks disagree: dt {first.dt} vs {chunk.dt}, shape {first.shape} vs {chunk.shape}"
                )
        sample = None if first.sample is None else np.concatenate([c.sample for c in chunks])
        return cls(
            step=np.concatenate([c.step for c in chunks]),
            index=np.concatenate([c.index for c in chunks]),
            sample=sample,
            dt=first.dt,
            shape=first.shape,
        )

    def canonical(self) -> SpikeChunk:
        """Return the records sorted by (sample, step, index) with duplicates removed.

        A neuron spikes at most once per step and sample, so a duplicate can
        only come from a chunk stored twice (a job resumed after a crash).
        """
        keys = [self.index, self.step] + ([] if self.sample is None else [self.sample])
        order = np.lexsort(keys)
        columns = [key[order] for key in keys]
        if order.size:
            keep = np.ones(order.size, dtype=bool)
            keep[1:] = np.any([column[1:] != column[:-1] for column in columns], axis=0)
            columns = [column[keep] for column in columns]
        return SpikeChunk(
            step=columns[1],
            index=columns[0],
            sample=None if self.sample is None else columns[2],
            dt=self.dt,
            shape=self.shape,
        )

    def to_npz_bytes(self) -> bytes:
        """Serialise the chunk in the ``spikes/MONITOR.npz`` format."""
        import io

        arrays = {
            "step": self.step,
            "index": self.index,
            "dt": np.float64(self.dt),
            "shape": np.asarray(self.shape, dtype=np.int64),
        }
        if self.sample is not None:
            arrays["sample"] = self.sample
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, source: str | os.PathLike | Any) -> SpikeChunk:
        """Load a chunk from a ``spikes/MONITOR.npz`` file or file object, never with pickle."""
        with np.load(source, allow_pickle=False) as data:
            sample = data["sample"] if "sample" in data.files else None
            return cls(
                step=data["step"],
                index=data["index"],
                sample=sample,
                dt=float(data["dt"]),
                shape=tuple(int(size) for size in np.atleast_1d(data["shape"])),
            )


@runtime_checkable
class ResultStore(Protocol):
    """Where a job writes its results.

    ``ember run`` uses :class:`DirectoryStore`; the service's worker uses a
    database-backed store with the same methods. Every method may be called
    again with the same arguments after a resumed job, and must give the same
    stored result (spike chunks may repeat; stores remove duplicates).
    """

    def put_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Store the job's metrics, replacing earlier ones."""

    def put_parameters(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Store the learned tensors (``CONNECTION.weight``, ...), replacing earlier ones."""

    def put_spikes(self, monitor: str, chunk: SpikeChunk) -> None:
        """Append spike records of one monitor."""

    def put_plot(self, name: str, png: bytes) -> None:
        """Store a PNG figure under ``name`` (without extension)."""

    def put_artifact(self, name: str, data: bytes) -> None:
        """Store any other file under ``name``."""

    def save_checkpoint(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Store the state needed to resume the job, replacing the previous checkpoint."""

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Return the last checkpoint, or ``None`` when there is none."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_ready(value: Any) -> Any:
    """Convert tensors, numpy values and non-finite floats into plain JSON values.

    NaN and infinities become ``None`` because JSON has no such numbers.
    """
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, torch.Tensor):
        return _json_ready(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(value: Any) -> bytes:
    """Serialise metrics or metadata as indented JSON with sorted keys."""
    return (json.dumps(_json_ready(value), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _contiguous_cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    result = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor {name!r} must be a torch.Tensor, got {type(tensor).__name__}")
        result[name] = tensor.detach().to("cpu").contiguous().clone()
    return result


@dataclass
class DirectoryStore:
    """A :class:`ResultStore` that writes the result layout into a directory.

    Every file is written through a temporary file and renamed into place, so
    an interrupted job leaves either the old or the new version of a file.

    Args:
        path: the output directory, created if missing.

    Examples:
        >>> import tempfile, torch
        >>> store = DirectoryStore(tempfile.mkdtemp())
        >>> store.put_metrics({"accuracy": 0.5})
        >>> store.read_metrics()
        {'accuracy': 0.5}
    """

    path: Path
    _spike_cache: dict[str, SpikeChunk] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"result path {str(self.path)!r} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ file paths

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def parameters_path(self) -> Path:
        return self.path / "parameters.safetensors"

    @property
    def checkpoint_tensors_path(self) -> Path:
        return self.path / "checkpoint.safetensors"

    @property
    def checkpoint_meta_path(self) -> Path:
        return self.path / "checkpoint.json"

    def spikes_path(self, monitor: str) -> Path:
        return self.path / "spikes" / f"{check_file_name(monitor, 'monitor')}.npz"

    def plot_path(self, name: str) -> Path:
        return self.path / "plots" / f"{check_file_name(name, 'plot')}.png"

    def artifact_path(self, name: str) -> Path:
        return self.path / "artifacts" / check_file_name(name, "artifact")

    # ---------------------------------------------------------------- writes

    def put_metrics(self, metrics: Mapping[str, Any]) -> None:
        _write_atomic(self.metrics_path, dumps_json(dict(metrics)))

    def put_parameters(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._save_tensors(self.parameters_path, tensors, metadata={"format": "ember-parameters"})

    def put_spikes(self, monitor: str, chunk: SpikeChunk) -> None:
        """Merge a chunk into ``spikes/MONITOR.npz``.

        The file is rewritten with the records sorted by (sample, step, index)
        and duplicates removed, so a chunk stored twice is stored once. The
        runner sends few, large chunks, so rewriting stays cheap.
        """
        path = self.spikes_path(monitor)
        previous = self._spike_cache.get(monitor)
        if previous is None and path.exists():
            previous = SpikeChunk.from_npz(path)
        merged = chunk if previous is None else SpikeChunk.concatenate([previous, chunk])
        merged = merged.canonical()
        _write_atomic(path, merged.to_npz_bytes())
        self._spike_cache[monitor] = merged

    def put_plot(self, name: str, png: bytes) -> None:
        if not bytes(png[:8]) == PNG_SIGNATURE:
            raise ValueError(f"plot {name!r} is not PNG data (the PNG signature is missing)")
        _write_atomic(self.plot_path(name), bytes(png))

    def put_artifact(self, name: str, data: bytes) -> None:
        _write_atomic(self.artifact_path(name), bytes(data))

    def save_checkpoint(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Write ``checkpoint.safetensors`` and then ``checkpoint.json``.

        The JSON file records the SHA-256 of the tensor file, so a crash
        between the two writes is detected on load instead of resuming from a
        mismatched pair.
        """
        self._save_tensors(self.checkpoint_tensors_path, tensors, metadata={"format": "ember-checkpoint"})
        digest = hashlib.sha256(self.checkpoint_tensors_path.read_bytes()).hexdigest()
        record = {"meta": dict(meta), "tensors_sha256": digest}
        _write_atomic(self.checkpoint_meta_path, dumps_json(record))

    def discard_checkpoint(self) -> None:
        """Delete the checkpoint files, so the next run starts from the beginning."""
        self.checkpoint_meta_path.unlink(missing_ok=True)
        self.checkpoint_tensors_path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- reads

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Return ``(tensors, meta)`` of the last checkpoint, or ``None``.

        Raises:
            ValueError: if the checkpoint files exist but do not belong together
                (the tensor file's SHA-256 differs from the one recorded).
        """
        if not self.checkpoint_meta_path.exists() or not self.checkpoint_tensors_path.exists():
            return None
        record = json.loads(self.checkpoint_meta_path.read_text())
        digest = hashlib.sha256(self.checkpoint_tensors_path.read_bytes()).hexdigest()
        if record.get("tensors_sha256") != digest:
            raise ValueError(
                f"checkpoint in {str(self.path)!r} is inconsistent: checkpoint.safetensors does not match "
                "checkpoint.json; delete both files to start the job again"
            )
        return load_file(self.checkpoint_tensors_path), record["meta"]

    def read_metrics(self) -> dict[str, Any]:
        """Return the stored metrics."""
        return json.loads(self.metrics_path.read_text())

    def read_parameters(self) -> dict[str, torch.Tensor]:
        """Return the stored learned tensors."""
        return load_file(self.parameters_path)

    def read_spikes(self, monitor: str) -> SpikeChunk:
        """Return every stored spike record of ``monitor``."""
        return SpikeChunk.from_npz(self.spikes_path(monitor))

    def list_plots(self) -> list[str]:
        """Return the names of the stored plots, sorted."""
        folder = self.path / "plots"
        return sorted(p.stem for p in folder.glob("*.png")) if folder.is_dir() else []

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            save_file(_contiguous_cpu(tensors), temporary, metadata=metadata)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
