"""Run a job spec: build the network, present the data, learn, read out, store results.

:func:`run_job` is the one entry point that ``ember run``, the Python API and
the service's worker share. A job runs in phases (see :mod:`ember.spec.job`):
``train`` (one per epoch, learning on), ``label`` and ``test`` (learning and
threshold adaptation off), or ``simulate``. Each phase presents batches of
samples; before each batch the runner

1. resets neuron and synapse state (when ``reset_between_samples``) and sets
   the network's ``sample_key`` to the number of the batch's first sample, so
   every sample draws its own noise whatever happened before,
2. calls ``before_sample()`` of every learning rule (training only; weight
   normalisation acts there),
3. hands the samples to the inputs, runs ``presentation_ms``, silences the
   data inputs and runs ``rest_ms``,

and afterwards it counts the spikes of every population, collects spike
records, reports progress and checks for cancellation. With
``low_activity_retry`` in the spec, the samples of the batch whose population
fired fewer than ``min_spikes`` go through steps 1 to 3 again before the batch
counts as done. They run as a smaller batch, with stronger Poisson input and a
``sample_key`` of their own (see :class:`ember.spec.job.LowActivityRetrySpec`).

Resuming: the state of a run between two batches is the network's complete
state plus the runner's position and accumulators, and every random draw is
seeded from the job seed, the sample number and the step. A checkpoint contains
exactly that, so a job that is cancelled (or killed) and run again with the
same spec and store continues from its last checkpoint and produces the same
parameters and metrics, bit for bit, as an uninterrupted run on the same
device.

Cancellation: ``should_cancel()`` is called after every batch. When it
returns true, the runner saves a checkpoint, stores the spike records
collected so far and raises :class:`JobCancelled`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ember import evaluation
from ember.builder import BuildError, build_network, load_parameters, parameter_tensors, resolve_device
from ember.data.rdk import DIRECTION_NAMES
from ember.random import mix_seed
from ember.results import ResultStore, SpikeChunk
from ember.spec.inputs import BackgroundInputSpec, EventsInputSpec, PoissonInputSpec
from ember.spec.job import (
    DirectionSelectivityReadout,
    JobSpec,
    MaxRateReadout,
    PatternDataSpec,
    PatternDetectionReadout,
    RdkDataSpec,
)

logger = logging.getLogger(__name__)

#: Seed stream of the training order of each epoch.
_ORDER_STREAM = 11
#: Steps per progress report and cancellation check in a simulation without data.
_SIMULATION_CHUNK_STEPS = 1000
#: Spike records held in memory before they are handed to the store.
_SPIKE_BUFFER_EVENTS = 1_000_000
#: Format tag of the checkpoint metadata.
CHECKPOINT_FORMAT = "ember-job-checkpoint/1"


class JobCancelled(Exception):
    """Raised by :func:`run_job` when ``should_cancel()`` returned true.

    The job's state was saved with ``store.save_checkpoint``; running the job
    again with the same spec and store resumes it.

    Attributes:
        done: samples (or, without data, steps) completed.
        total: samples (or steps) of the whole job.
    """

    def __init__(self, done: int, total: int) -> None:
        self.done = done
        self.total = total
        super().__init__(f"job cancelled after {done} of {total}; run it again with the same store to resume")


class CheckpointMismatch(ValueError):
    """The store contains a checkpoint of a different job spec."""


@dataclass(frozen=True)
class Progress:
    """A progress report, sent after every batch.

    Attributes:
        done: samples completed (steps, for a simulation without data).
        total: samples (steps) of the whole job.
        samples_per_s: the rate since this process started the job.
        eta_s: estimated seconds to completion, from the rate after this process's
            first batch, because that batch pays one-off costs such as building
            the kernels. ``None`` until a later batch has finished.
        phase: ``train``, ``label``, ``test`` or ``simulate``.
        epoch: the training epoch (from 0), ``None`` outside training.
        unit: ``"samples"``, or ``"steps"`` for a simulation without data.
    """

    done: int
    total: int
    samples_per_s: float
    eta_s: float | None
    phase: str
    epoch: int | None
    unit: Literal["samples", "steps"] = "samples"


@dataclass(frozen=True)
class Phase:
    """One pass over samples: its name, split, size, batch size and whether learning is on."""

    name: Literal["train", "label", "test", "simulate"]
    split: Literal["train", "test"]
    count: int
    batch_size: int
    learning: bool
    epoch: int | None = None

    @property
    def key(self) -> str:
        """A name unique among the job's phases (``train_0``, ``label``, ...)."""
        return self.name if self.epoch is None else f"{self.name}_{self.epoch}"


@dataclass
class DataSplit:
    """Samples of one split, as loaded (uint8), and what they are."""

    samples: torch.Tensor
    labels: torch.Tensor
    kind: Literal["intensity", "spikes"]
    max_value: int


def run_job(
    spec: JobSpec,
    store: ResultStore,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run a job and store its results; resume from the store's checkpoint if it has one.

    Args:
        spec: the validated job spec.
        store: where metrics, parameters, spikes, plots and checkpoints go.
        progress: called with a :class:`Progress` after every batch.
        should_cancel: called after every batch; returning true saves a
            checkpoint and raises :class:`JobCancelled`.

    Returns:
        The metrics, also stored with ``store.put_metrics``. Figures are named
        plainly: ``accuracy``, ``hit_rate``, ``false_alarm_rate``,
        ``firing_rate_hz``, ...; ``run`` contains the device and timings, which
        differ between otherwise identical runs.

    Raises:
        JobCancelled: if ``should_cancel()`` returned true.
        CheckpointMismatch: if the store's checkpoint belongs to another spec.
        BuildError: if the network cannot be built or the data does not fit it.
    """
    return _JobRun(spec, store, progress, should_cancel).run()


class _JobRun:
    """The state of one run of a job: network, data, position and accumulators."""

    def __init__(self, spec: JobSpec, store: ResultStore, progress, should_cancel) -> None:
        self.spec = spec
        self.store = store
        self.report = progress
        self.should_cancel = should_cancel
        self.device = resolve_device(spec.device)
        self.dtype = torch.float64 if spec.dtype == "float64" else torch.float32
        self.fingerprint = spec.fingerprint()
        self.splits: dict[str, DataSplit] = {}
        self.phases: list[Phase] = []
        self.spike_buffer: dict[str, list[SpikeChunk]] = {}
        self.buffered_events = 0
        self.recorded_chunks: dict[str, list[SpikeChunk]] = {}
        self.record_limit: int | None = None
        self.batch_base = 0
        self.elapsed_before = 0.0
        self.steps_run = 0
        # Accumulators, saved in checkpoints.
        self.counts: dict[str, torch.Tensor] = {}
        self.spike_totals: dict[str, torch.Tensor] = {}
        self.position = (0, 0)
        self.initial_delays: dict[str, torch.Tensor] = {}
        # Per phase: samples retried, retry presentations, samples still below min_spikes after the last retry.
        self.retry_stats: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ setup

    def run(self) -> dict[str, Any]:
        checkpoint = self.store.load_checkpoint()
        if checkpoint is not None:
            tensors, meta = checkpoint
            self._check_checkpoint(meta)
            if meta.get("finished"):
                logger.info("job already finished; returning its stored metrics")
                return meta["metrics"]
        self._load_data()
        self.phases = self._plan_phases()
        first_batch = self.phases[0].batch_size if self.phases else self.spec.batch_size
        batch = int(checkpoint[1]["batch_size"]) if checkpoint is not None else first_batch
        self.built = build_network(self.spec, batch_size=batch, device=self.device, spike_sink=self._collect_spikes)
        self.populations = list(self.spec.network.populations)
        self.nodes = self.populations + list(self.spec.network.inputs)
        if checkpoint is not None:
            self._restore(*checkpoint)
        else:
            self._start_fresh()
        self.started = time.perf_counter()
        self.done_at_start = self._done()
        self.rate_anchor: tuple[float, int] | None = None

        if self.spec.data is None:
            self._run_simulation()
        else:
            while self.position[0] < len(self.phases):
                self._run_phase(self.phases[self.position[0]])
        return self._finish()

    def _check_checkpoint(self, meta: dict[str, Any]) -> None:
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatch(
                f"the store's checkpoint has format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}; "
                "discard it to start the job again"
            )
        if meta.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatch(
                "the store contains a checkpoint of a different job spec; use another result directory "
                "or discard the checkpoint (ember run --fresh)"
            )

    def _start_fresh(self) -> None:
        if self.spec.initial_parameters:
            from safetensors.torch import load_file

            try:
                tensors = load_file(self.spec.initial_parameters)
            except (OSError, ValueError) as error:
                raise BuildError(f"initial_parameters {self.spec.initial_parameters!r} cannot be read: {error}") from error
            load_parameters(self.built, tensors)
        for name, connection in self.built.network.connections.items():
            if connection.delay is not None:
                self.initial_delays[name] = connection.delay.detach().to("cpu").clone()
        self.built.network.reset_state()

    def _load_data(self) -> None:
        """Load the splits the phases need, as uint8 tensors on the CPU."""
        if self.spec.data is None:
            return
        from ember.data import dataset_info, load_dataset

        data = self.spec.data
        info = dataset_info(data.dataset)
        phases = self.spec.phase_samples()
        needs = {"train": max(phases.get("train", 0) // self.spec.epochs if "train" in phases else 0, phases.get("label", 0))}
        needs["test"] = max(phases.get("test", 0), phases.get("simulate", 0))
        options = data.load_options(self.spec.seed, self.spec.dt)
        for split, count in needs.items():
            if count <= 0:
                continue
            try:
                samples, labels = load_dataset(data.dataset, split, limit=count, **options)
            except ValueError as error:
                raise BuildError(f"data set {data.dataset!r} ({split}): {error}") from error
            self.splits[split] = DataSplit(samples, labels, info.kind, info.max_value)
            self._check_data_fits(split, self.splits[split])

    def _check_data_fits(self, split: str, data: DataSplit) -> None:
        for name, input_spec in self.spec.network.inputs.items():
            if not input_spec.data_driven:
                continue
            if isinstance(input_spec, EventsInputSpec) != (data.kind == "spikes"):
                expected = "an 'events' input" if data.kind == "spikes" else "an encoding input (poisson, latency, rank_order)"
                raise BuildError(f"input {name!r}: data set {self.spec.data.dataset!r} contains {data.kind}, which needs {expected}")
            sample_shape = tuple(data.samples.shape[2:] if data.kind == "spikes" else data.samples.shape[1:])
            if math.prod(sample_shape) != input_spec.size:
                raise BuildError(
                    f"input {name!r} has {input_spec.size} units (shape {input_spec.shape}), but the samples of "
                    f"{self.spec.data.dataset!r} have shape {list(sample_shape)}; make the sizes equal"
                )
            if data.kind == "spikes":
                frames = int(data.samples.shape[1])
                if frames > self.spec.steps_per_sample:
                    raise BuildError(f"trials of {frames} steps do not fit in a sample of {self.spec.steps_per_sample} steps")

    def _plan_phases(self) -> list[Phase]:
        spec = self.spec
        if spec.data is None:
            return []
        counts = spec.phase_samples()
        train_batch, eval_batch = spec.batch_size, spec.effective_eval_batch_size
        phases = []
        if "train" in counts:
            per_epoch = counts["train"] // spec.epochs
            phases += [Phase("train", "train", per_epoch, train_batch, True, epoch) for epoch in range(spec.epochs)]
        if "label" in counts:
            phases.append(Phase("label", "train", counts["label"], eval_batch, False))
        if "test" in counts:
            phases.append(Phase("test", "test", counts["test"], eval_batch, False))
        if "simulate" in counts:
            phases.append(Phase("simulate", "test", counts["simulate"], eval_batch, False))
        return phases

    # --------------------------------------------------------------- running

    def _order(self, phase: Phase) -> torch.Tensor:
        if phase.name == "train" and self.spec.data.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.spec.seed, _ORDER_STREAM, phase.epoch))
            return torch.randperm(phase.count, generator=generator)
        return torch.arange(phase.count)

    def _phase_start(self, index: int) -> int:
        """Return the number of the first sample of phase ``index`` among all samples of the job."""
        return sum(phase.count for phase in self.phases[:index])

    def _run_phase(self, phase: Phase) -> None:
        network = self.built.network
        network.learning(phase.learning)
        self._set_adaptation(phase.learning)
        order = self._order(phase)
        self._ensure_accumulators(phase)
        phase_index, offset = self.position
        start = self._phase_start(phase_index)
        record = phase.name in self.spec.record.phases

        while offset < phase.count:
            batch = order[offset : offset + phase.batch_size]
            self.batch_base = start + offset
            self.record_limit = start + self.spec.record.samples if record else start
            self._run_batch(phase, offset, batch)
            offset += batch.numel()
            self.position = (phase_index, offset) if offset < phase.count else (phase_index + 1, 0)
            self._after_batch(phase)

    def _run_batch(self, phase: Phase, offset: int, index: torch.Tensor) -> None:
        recording = self.batch_base < (self.record_limit or 0)
        counts = self._present_batch(phase, index, self.batch_base, 0.0, recording)
        readout = self._readout_counts(counts, int(index.numel()))
        retry = self.spec.low_activity_retry
        if retry is not None and phase.name in retry.phases:
            readout = self._retry_low_activity(phase, index, counts, readout)
        self._accumulate(phase, offset, index, readout)

    def _present_batch(
        self, phase: Phase, index: torch.Tensor, key: int, extra_rate_hz: float, recording: bool
    ) -> dict[str, torch.Tensor]:
        """Present the samples ``index`` of the phase's split side by side, once.

        Args:
            phase: the phase the samples belong to.
            index: the samples' positions in the split, ``(batch,)``.
            key: the network's ``sample_key`` for this presentation.
            extra_rate_hz: added to ``max_rate_hz`` of every Poisson data input, in Hz.
            recording: whether spike monitors record this presentation.

        Returns:
            The spike counts of every node, ``(batch, *shape)``, also added to the phase totals.
        """
        network = self.built.network
        size = int(index.numel())
        if network.batch_size != size:
            network.set_batch_size(size)
            # State monitors size their buffers by the batch; they restart with the new size.
            for name in self.built.state_monitors:
                network.monitors[name].bind(network)
        elif self.spec.reset_between_samples:
            network.reset_state()
        network.sample_key.fill_(key)
        if phase.learning:
            for rule in network.rules.values():
                if getattr(rule, "enabled", True) and hasattr(rule, "before_sample"):
                    rule.before_sample()
        for name in self.built.count_monitors.values():
            network.monitors[name].clear()
        for name in self.built.spike_monitors:
            network.monitors[name].stop_step = None if recording else 0

        data = self.splits[phase.split]
        self._present(data.samples[index], data, extra_rate_hz)
        presentation = int(round(self.spec.presentation_ms / self.spec.dt))
        network.run(presentation)
        rest = self.spec.steps_per_sample - presentation
        if rest:
            self._silence()
            network.run(rest)
        self.steps_run += self.spec.steps_per_sample

        for name in self.built.spike_monitors:
            network.monitors[name].flush()
        return self._count_spikes(phase.key, size * self.spec.steps_per_sample)

    def _readout_counts(self, counts: dict[str, torch.Tensor], size: int) -> torch.Tensor | None:
        """Return the read-out population's counts ``(batch, units)`` on the CPU, or ``None`` without a read-out."""
        if self.spec.readout is None:
            return None
        # A copy: the monitor's buffer is cleared in place before the next presentation.
        return counts[self.spec.readout.population].reshape(size, -1).to("cpu", torch.float32, copy=True)

    def _retry_low_activity(
        self, phase: Phase, index: torch.Tensor, counts: dict[str, torch.Tensor], readout: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Present the samples of the batch that fired too little again, with stronger input.

        See :class:`ember.spec.job.LowActivityRetrySpec`. The samples still
        below ``min_spikes`` after a retry are presented side by side again,
        as a smaller batch, up to ``max_retries`` times.

        Args:
            phase: the phase of the batch.
            index: the batch's samples, ``(batch,)``.
            counts: the spike counts of the batch's first presentation.
            readout: the read-out counts of the first presentation, ``(batch, units)``, or ``None``.

        Returns:
            The read-out counts with the rows of retried samples taken from their last presentation.
        """
        retry = self.spec.low_activity_retry
        size = int(index.numel())
        # NOTE: a retry of part of a batch changes the batch size, which restarts state monitors.
        spikes = counts[retry.population].reshape(size, -1).sum(dim=1).to("cpu")
        failing = (spikes < retry.min_spikes).nonzero().reshape(-1)
        stats = self.retry_stats.setdefault(phase.key, torch.zeros(3, dtype=torch.int64))
        stats[0] += int(failing.numel())
        total = self._total()
        for attempt in range(1, retry.max_retries + 1):
            if failing.numel() == 0:
                break
            stats[1] += int(failing.numel())
            key = self.batch_base + attempt * total
            counts = self._present_batch(phase, index[failing], key, attempt * retry.rate_increase_hz, False)
            if readout is not None:
                readout[failing] = self._readout_counts(counts, int(failing.numel()))
            spikes = counts[retry.population].reshape(int(failing.numel()), -1).sum(dim=1).to("cpu")
            failing = failing[spikes < retry.min_spikes]
        stats[2] += int(failing.numel())
        return readout

    def _present(self, samples: torch.Tensor, data: DataSplit, extra_rate_hz: float = 0.0) -> None:
        """Hand a batch of samples (uint8, sample index first) to the inputs.

        Args:
            samples: the samples, uint8, sample index first.
            data: the split they come from (its kind and largest value).
            extra_rate_hz: added to ``max_rate_hz`` of every Poisson input, in Hz
                (a low-activity retry); 0 leaves the rates as the spec sets them.
        """
        network = self.built.network
        batch = samples.shape[0]
        for name, input_spec in self.built.inputs.items():
            node = network.nodes[name]
            shape = (batch, *input_spec.shape)
            if isinstance(input_spec, BackgroundInputSpec):
                node.set_data(torch.full(shape, input_spec.rate_hz, dtype=self.dtype, device=self.device))
            elif not input_spec.data_driven:
                continue
            elif isinstance(input_spec, EventsInputSpec):
                frames = samples.shape[1]
                spikes = samples.to(self.device, self.dtype).reshape(batch, frames, *input_spec.shape).transpose(0, 1)
                node.set_data(spikes.contiguous())
            else:
                values = samples.to(self.device, self.dtype).reshape(shape) / float(data.max_value)
                if isinstance(input_spec, PoissonInputSpec):
                    values = values * (input_spec.max_rate_hz + extra_rate_hz)
                node.set_data(values)

    def _silence(self) -> None:
        """Stop the data inputs for the rest period (event inputs fall silent after their frames)."""
        network = self.built.network
        for name, input_spec in self.built.inputs.items():
            if input_spec.data_driven and not isinstance(input_spec, EventsInputSpec):
                node = network.nodes[name]
                node.set_data(torch.zeros_like(node.data), restart=False)

    def _set_adaptation(self, enabled: bool) -> None:
        """Switch threshold adaptation of adaptive populations on or off (frozen outside training)."""
        for name in self.populations:
            population = self.built.network.nodes[name]
            if hasattr(population, "adapt"):
                population.adapt = bool(enabled)

    def _run_simulation(self) -> None:
        """Run a simulation without data for ``duration_ms``, in chunks of steps."""
        network = self.built.network
        network.learning(False)
        self._set_adaptation(False)
        total = self._total()
        self._ensure_accumulators(Phase("simulate", "test", 1, network.batch_size, False))
        self.record_limit = 1 if "simulate" in self.spec.record.phases and self.spec.record.samples > 0 else 0
        self.batch_base = 0
        for name in self.built.spike_monitors:
            network.monitors[name].stop_step = None if self.record_limit else 0
        for name in self.built.inputs:
            input_spec = self.built.inputs[name]
            if isinstance(input_spec, BackgroundInputSpec):
                node = network.nodes[name]
                node.set_data(torch.full((network.batch_size, *input_spec.shape), input_spec.rate_hz, dtype=self.dtype, device=self.device), restart=self.steps_run == 0)
        while self.steps_run < total:
            steps = min(_SIMULATION_CHUNK_STEPS, total - self.steps_run)
            network.run(steps)
            self.steps_run += steps
            for name in self.built.spike_monitors:
                network.monitors[name].flush()
            self._count_spikes("simulate", steps * network.batch_size)
            for name in self.built.count_monitors.values():
                network.monitors[name].clear()
            self._after_batch(Phase("simulate", "test", 0, network.batch_size, False))

    # ---------------------------------------------------------- bookkeeping

    def _ensure_accumulators(self, phase: Phase) -> None:
        key = phase.key
        if key not in self.spike_totals:
            self.spike_totals[key] = torch.zeros(len(self.nodes) + 1, dtype=torch.float64)
        readout = self.spec.readout
        keep = readout is not None and (
            phase.name in ("label", "test", "simulate") or (isinstance(readout, MaxRateReadout) and readout.curve_every)
        )
        if keep and key not in self.counts:
            size = self.spec.network.populations[readout.population].size
            self.counts[key] = torch.zeros(phase.count, size, dtype=torch.float32)
            self.counts[f"{key}.labels"] = torch.full((phase.count,), -1, dtype=torch.int64)

    def _count_spikes(self, key: str, sample_steps: int) -> dict[str, torch.Tensor]:
        """Add the spikes counted since the monitors were cleared to the phase totals.

        Args:
            key: the phase key.
            sample_steps: the steps simulated times the samples simulated, for the rates.

        Returns:
            The counts of each node, ``(batch, *shape)``.
        """
        counts = {}
        network = self.built.network
        totals = self.spike_totals[key]
        for position, node in enumerate(self.nodes):
            count = network.monitors[self.built.count_monitors[node]].counts.detach()
            counts[node] = count
            totals[position] += float(count.sum())
        totals[-1] += float(sample_steps)
        return counts

    def _accumulate(self, phase: Phase, offset: int, index: torch.Tensor, readout: torch.Tensor | None) -> None:
        """Keep the read-out population's counts ``(batch, units)`` and the labels of the batch's samples."""
        if phase.key in self.counts and readout is not None:
            size = int(index.numel())
            labels = self.splits[phase.split].labels[index]
            self.counts[phase.key][offset : offset + size] = readout
            self.counts[f"{phase.key}.labels"][offset : offset + size] = labels.to(torch.int64)

    def _collect_spikes(self, monitor: str, chunk) -> None:
        """Receive a chunk from a spike monitor and file it under global sample numbers."""
        sample = np.asarray(chunk.sample, dtype=np.int64) + self.batch_base
        keep = sample < (self.record_limit or 0)
        if not keep.any():
            return
        record = SpikeChunk(
            step=np.asarray(chunk.step)[keep],
            index=np.asarray(chunk.index)[keep],
            sample=sample[keep] if self.spec.data is not None else None,
            dt=chunk.dt,
            shape=chunk.shape,
        )
        self.spike_buffer.setdefault(monitor, []).append(record)
        self.recorded_chunks.setdefault(monitor, []).append(record)
        self.buffered_events += len(record)
        if self.buffered_events >= _SPIKE_BUFFER_EVENTS:
            self._flush_spikes()

    def _flush_spikes(self) -> None:
        for monitor, chunks in self.spike_buffer.items():
            if chunks:
                self.store.put_spikes(monitor, SpikeChunk.concatenate(chunks))
        self.spike_buffer = {}
        self.buffered_events = 0

    def _eta(self, now: float, done: int, total: int) -> float | None:
        """Estimate the seconds left from the rate since this process's first batch.

        Returns None right after the first batch, whose time includes one-off
        costs, and 0 when the job is done.
        """
        if done >= total:
            return 0.0
        if self.rate_anchor is None:
            self.rate_anchor = (now, done)
            return None
        anchor_time, anchor_done = self.rate_anchor
        recent = (done - anchor_done) / (now - anchor_time) if now > anchor_time else 0.0
        return (total - done) / recent if recent > 0 else None

    def _done(self) -> int:
        if self.spec.data is None:
            return self.steps_run
        phase_index, offset = self.position
        return self._phase_start(phase_index) + offset

    def _total(self) -> int:
        if self.spec.data is None:
            return int(round((self.spec.duration_ms or 0.0) / self.spec.dt))
        return sum(phase.count for phase in self.phases)

    def _after_batch(self, phase: Phase) -> None:
        done, total = self._done(), self._total()
        if self.report is not None:
            now = time.perf_counter()
            elapsed = now - self.started
            rate = (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0
            eta = self._eta(now, done, total)
            unit = "steps" if self.spec.data is None else "samples"
            self.report(Progress(done, total, rate, eta, phase.name, phase.epoch, unit))
        finished = done >= total
        every = self.spec.checkpoint_every
        if every and not finished:
            previous = done - (phase.batch_size if self.spec.data is not None else _SIMULATION_CHUNK_STEPS)
            if done // every > max(previous, 0) // every:
                self._save_checkpoint()
        if not finished and self.should_cancel is not None and self.should_cancel():
            self._save_checkpoint()
            logger.info("job cancelled after %d of %d; checkpoint saved", done, total)
            raise JobCancelled(done, total)

    # ------------------------------------------------------------ checkpoints

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.started)

    def _save_checkpoint(self, finished: bool = False, metrics: dict[str, Any] | None = None) -> None:
        self._flush_spikes()
        from ember.checkpoint import network_tensors

        tensors = {f"network/{name}": tensor for name, tensor in network_tensors(self.built.network).items()}
        tensors.update({f"counts/{key}": value for key, value in self.counts.items()})
        tensors.update({f"spike_totals/{key}": value for key, value in self.spike_totals.items()})
        tensors.update({f"initial_delay/{key}": value for key, value in self.initial_delays.items()})
        tensors.update({f"retries/{key}": value for key, value in self.retry_stats.items()})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "phase": self.position[0],
            "offset": self.position[1],
            "steps_run": self.steps_run,
            "batch_size": self.built.network.batch_size,
            "elapsed_s": self._elapsed(),
            "finished": finished,
            "metrics": metrics,
        }
        self.store.save_checkpoint(tensors, meta)

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        from ember.checkpoint import load_state

        network_state = {key[len("network/"):]: value.to(self.device) for key, value in tensors.items() if key.startswith("network/")}
        try:
            load_state(self.built.network, network_state)
        except ValueError as error:
            raise CheckpointMismatch(f"the checkpoint does not fit the network: {error}") from error
        for key, value in tensors.items():
            group, _, name = key.partition("/")
            if group == "counts":
                self.counts[name] = value.clone()
            elif group == "spike_totals":
                self.spike_totals[name] = value.clone()
            elif group == "initial_delay":
                self.initial_delays[name] = value.clone()
            elif group == "retries":
                self.retry_stats[name] = value.clone()
        self.position = (int(meta["phase"]), int(meta["offset"]))
        self.steps_run = int(meta["steps_run"])
        self.elapsed_before = float(meta.get("elapsed_s", 0.0))
        logger.info("resuming job at phase %d, offset %d", *self.position)

    # ---------------------------------------------------------------- results

    def _finish(self) -> dict[str, Any]:
        self._flush_spikes()
        metrics = self._metrics()
        if self.spec.record.parameters:
            self.store.put_parameters(parameter_tensors(self.built))
        self._store_state_monitors()
        if self.spec.record.plots:
            for name, png in _draw_plots(self, metrics).items():
                self.store.put_plot(name, png)
        self.store.put_metrics(metrics)
        self._save_checkpoint(finished=True, metrics=metrics)
        return metrics

    def _store_state_monitors(self) -> None:
        import io

        for name in self.built.state_monitors:
            steps, values = self.built.network.monitors[name].history()
            buffer = io.BytesIO()
            np.savez_compressed(
                buffer,
                step=steps.cpu().numpy().astype(np.int64),
                values=values.cpu().numpy(),
                dt=np.float64(self.spec.dt),
            )
            self.store.put_artifact(f"{name}.npz", buffer.getvalue())

    def _metrics(self) -> dict[str, Any]:
        elapsed = self._elapsed()
        samples = {phase.key: phase.count for phase in self.phases}
        metrics: dict[str, Any] = {
            "kind": self.spec.kind,
            "samples": samples,
            "steps": self.steps_run,
            "firing_rate_hz": self._firing_rates(),
        }
        metrics.update(_readout_metrics(self))
        if self.spec.low_activity_retry is not None:
            metrics["low_activity_retry"] = {
                key: {"retried_samples": int(stats[0]), "retries": int(stats[1]), "still_low": int(stats[2])}
                for key, stats in self.retry_stats.items()
            }
            metrics["retried_samples"] = sum(int(stats[0]) for stats in self.retry_stats.values())
        total_samples = sum(samples.values())
        metrics["run"] = {
            "device": str(self.device),
            "run_time_s": elapsed,
            "steps_per_s": self.steps_run / elapsed if elapsed > 0 else None,
            "samples_per_s": total_samples / elapsed if elapsed > 0 and total_samples else None,
        }
        return metrics

    def _firing_rates(self) -> dict[str, dict[str, float]]:
        """Mean firing rate in Hz of every population and input, per phase."""
        rates = {}
        shapes = self.spec.network.node_shapes()
        for key, totals in self.spike_totals.items():
            sample_steps = float(totals[-1])
            if sample_steps <= 0:
                continue
            seconds = sample_steps * self.spec.dt / 1000.0
            rates[key] = {
                node: float(totals[position]) / (math.prod(shapes[node]) * seconds)
                for position, node in enumerate(self.nodes)
            }
        return rates


def _readout_metrics(run: _JobRun) -> dict[str, Any]:
    """Compute the read-out's figures from the stored spike counts."""
    readout = run.spec.readout
    if readout is None or run.spec.data is None:
        return {}
    if isinstance(readout, MaxRateReadout):
        return _max_rate_metrics(run, readout)
    if isinstance(readout, PatternDetectionReadout):
        return _pattern_metrics(run, readout)
    if isinstance(readout, DirectionSelectivityReadout):
        return _direction_metrics(run, readout)
    return {}  # pragma: no cover - the spec union is closed


def _n_classes(run: _JobRun) -> int:
    """Return the number of classes: directions of an RDK set, else the largest label plus one."""
    if isinstance(run.spec.data, RdkDataSpec):
        return run.spec.data.num_directions
    labels = [split.labels for split in run.splits.values()]
    return int(max(int(label.max()) for label in labels if label.numel()) + 1)


def _max_rate_metrics(run: _JobRun, readout: MaxRateReadout) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    n_classes = _n_classes(run)
    if "label" in run.counts and "test" in run.counts:
        assignments = evaluation.assign_labels(run.counts["label"], run.counts["label.labels"], n_classes)
        predictions = evaluation.classify(run.counts["test"], assignments, n_classes)
        labels = run.counts["test.labels"]
        metrics["accuracy"] = evaluation.accuracy(predictions, labels)
        metrics["unclassified"] = int((predictions == evaluation.NO_PREDICTION).sum())
        metrics["confusion_matrix"] = evaluation.confusion_matrix(predictions, labels, n_classes).tolist()
        metrics["assignments"] = assignments.tolist()
        metrics["neurons_per_class"] = torch.bincount(assignments[assignments >= 0], minlength=n_classes).tolist()
    if readout.curve_every:
        points, accuracies = [], []
        window = readout.curve_every
        seen = 0
        for phase in run.phases:
            if phase.name != "train" or phase.key not in run.counts:
                continue
            counts, labels = run.counts[phase.key], run.counts[f"{phase.key}.labels"]
            for start in range(window, phase.count - window + 1, window):
                previous = slice(start - window, start)
                current = slice(start, start + window)
                assignments = evaluation.assign_labels(counts[previous], labels[previous], n_classes)
                predictions = evaluation.classify(counts[current], assignments, n_classes)
                points.append(seen + start + window)
                accuracies.append(evaluation.accuracy(predictions, labels[current]))
            seen += phase.count
        metrics["accuracy_curve"] = {"samples": points, "accuracy": accuracies}
    return metrics


def _pattern_metrics(run: _JobRun, readout: PatternDetectionReadout) -> dict[str, Any]:
    if "test" not in run.counts:
        return {}
    counts = run.counts["test"].sum(dim=1)
    labels = run.counts["test.labels"]
    rates = evaluation.detection_rates(counts >= readout.min_spikes, labels == 1)
    metrics: dict[str, Any] = dict(rates)
    metrics["detector_spikes_with_pattern"] = float(counts[labels == 1].mean()) if (labels == 1).any() else None
    metrics["detector_spikes_without_pattern"] = float(counts[labels == 0].mean()) if (labels == 0).any() else None
    if isinstance(run.spec.data, PatternDataSpec):
        metrics.update(_delay_alignment(run, readout.population))
    return metrics


def data_pattern(spec: JobSpec):
    """Return the :class:`ember.data.SpikePattern` embedded in a job's ``pattern`` data set.

    NOTE: this repeats how ``ember.data.load_dataset`` derives the pattern from
    the seed (stream ``_PATTERN_STREAM``); a test checks that the pattern
    fires in the generated trials. Replace it with a public accessor of
    ember.data once one exists.
    """
    from ember.data import random_pattern
    from ember.data.registry import _PATTERN_STREAM

    data = spec.data
    seed = spec.seed if data.seed is None else data.seed
    return random_pattern(
        data.num_inputs, dt=spec.dt, size=data.pattern_size, span_ms=data.span_ms, seed=mix_seed(seed, _PATTERN_STREAM)
    )


def _clean_first_spikes(run: _JobRun, name: str, pattern) -> torch.Tensor:
    """Present the pattern alone (no noise) to a copy of the learned network; return each neuron's first spike step (-1: none)."""
    built = build_network(run.spec, batch_size=1, device=run.device)
    load_parameters(built, parameter_tensors(run.built))
    network = built.network
    network.learning(False)
    for population in run.populations:
        if hasattr(network.nodes[population], "adapt"):
            network.nodes[population].adapt = False
    network.reset_state()
    steps = run.spec.steps_per_sample
    for input_name, input_spec in built.inputs.items():
        node = network.nodes[input_name]
        if isinstance(input_spec, EventsInputSpec):
            frames = torch.zeros(steps, 1, input_spec.size, dtype=run.dtype, device=run.device)
            frames[pattern.offsets, 0, pattern.indices] = 1.0
            node.set_data(frames.reshape(steps, 1, *input_spec.shape))
        elif input_spec.data_driven or isinstance(input_spec, BackgroundInputSpec):
            node.set_data(torch.zeros(1, *input_spec.shape, dtype=run.dtype, device=run.device))
    size = run.spec.network.populations[name].size
    first = torch.full((size,), -1, dtype=torch.int64)
    with torch.no_grad():
        for step in range(steps):
            network.step()
            fired = network.nodes[name].spikes[0].reshape(-1).to("cpu") > 0
            first = torch.where(fired & (first < 0), torch.full_like(first, step), first)
    return first


def _delay_alignment(run: _JobRun, population: str) -> dict[str, Any]:
    """Measure how learned delays align the pattern's arrival times at the detector.

    The detector neuron is the one that fires first when the pattern is
    presented alone. Its causal inputs are the pattern inputs whose spikes
    arrive (offset plus learned delay) no later than that spike. Reported:
    the spread (max - min) of their arrival times with the initial and with
    the learned delays, and the correlation between their learned delays and
    offsets, which approaches -1 when ``delay = constant - offset``.
    """
    from ember.connections import Dense

    names = [
        name
        for name, spec in run.spec.network.connections.items()
        if spec.post == population
        and isinstance(run.spec.network.inputs.get(spec.pre), EventsInputSpec)
        and name in run.initial_delays
        and type(run.built.network.connections[name]) is Dense
    ]
    if not names:
        return {}
    connection = run.built.network.connections[names[0]]
    pattern = data_pattern(run.spec)
    first = _clean_first_spikes(run, population, pattern)
    metrics: dict[str, Any] = {"min_delay_ms": float(connection.delay.detach().min())}
    fired = (first >= 0).nonzero().reshape(-1)
    if fired.numel() == 0:
        metrics.update(pattern_first_spike_ms=None, causal_inputs=0, arrival_spread_ms=None, delay_offset_correlation=None)
        return metrics
    neuron = int(fired[torch.argmin(first[fired])])
    spike_ms = float(first[neuron]) * run.spec.dt
    offsets = pattern.offsets_ms.to(torch.float64)
    learned = connection.delay.detach().to("cpu", torch.float64)[pattern.indices, neuron]
    initial = run.initial_delays[names[0]].to(torch.float64)[pattern.indices, neuron]
    causal = offsets + learned <= spike_ms + 1e-9
    metrics.update(pattern_first_spike_ms=spike_ms, detector_neuron=neuron, causal_inputs=int(causal.sum()))
    if int(causal.sum()) >= 2:
        before = (offsets + initial)[causal]
        after = (offsets + learned)[causal]
        metrics["arrival_spread_ms"] = {
            "initial": float(before.max() - before.min()),
            "learned": float(after.max() - after.min()),
        }
    else:
        metrics["arrival_spread_ms"] = None
    correlation = None
    if int(causal.sum()) >= 3 and float(offsets[causal].std()) > 0 and float(learned[causal].std()) > 0:
        correlation = float(torch.corrcoef(torch.stack([offsets[causal], learned[causal]]))[0, 1])
    metrics["delay_offset_correlation"] = correlation
    return metrics


def _direction_metrics(run: _JobRun, readout: DirectionSelectivityReadout) -> dict[str, Any]:
    if "test" not in run.counts:
        return {}
    shape = run.spec.network.populations[readout.population].shape
    maps = shape[0]
    counts = run.counts["test"].reshape(-1, maps, math.prod(shape[1:])).sum(dim=2)
    labels = run.counts["test.labels"]
    n_directions = _n_classes(run)
    responses = torch.zeros(n_directions, maps, dtype=torch.float64)
    for direction in range(n_directions):
        chosen = labels == direction
        if chosen.any():
            responses[direction] = counts[chosen].to(torch.float64).mean(dim=0)
    selectivity = evaluation.direction_selectivity(responses)
    preferred = [p for p in selectivity["preferred"] if p >= 0]
    names = DIRECTION_NAMES.get(n_directions) if isinstance(run.spec.data, RdkDataSpec) else None
    return {
        "direction_selectivity": selectivity["dsi"],
        "preferred_direction": selectivity["preferred"],
        # None for a map that never spiked.
        "preferred_direction_name": [names[p] if names and p >= 0 else None for p in selectivity["preferred"]],
        "distinct_preferred_directions": len(set(preferred)),
        "mean_direction_selectivity": float(np.mean(selectivity["dsi"])) if selectivity["dsi"] else None,
        "map_responses": responses.tolist(),
    }


def _square_image(size: int) -> tuple[int, int] | None:
    side = math.isqrt(size)
    return (side, side) if side * side == size and side > 1 else None


def _map_label(index: int, names: list[str | None] | None, separator: str = ": ") -> str:
    """Return the label of feature map ``index``: ``"map 3"``, with its preferred direction when known (``"map 3: east"``)."""
    name = names[index] if names and index < len(names) else None
    return f"map {index}{separator}{name}" if name else f"map {index}"


def _raster_chunk(chunk: SpikeChunk, steps_per_sample: int) -> SpikeChunk:
    """Lay the recorded samples end to end on one time axis, for a raster plot."""
    if chunk.sample is None or not len(chunk):
        return chunk
    # Recorded samples need not be consecutive (a retry or a later phase), so
    # each distinct sample gets the next slot instead of its sample number.
    _, position = np.unique(chunk.sample, return_inverse=True)
    return SpikeChunk(
        step=position.astype(np.int64) * steps_per_sample + chunk.step,
        index=chunk.index,
        sample=chunk.sample,
        dt=chunk.dt,
        shape=chunk.shape,
    )


def _draw_plots(run: _JobRun, metrics: dict[str, Any]) -> dict[str, bytes]:
    """Draw the job's figures: rasters, weights, delays, accuracy and selectivity."""
    from ember import plots
    from ember.connections import Conv2d, Dense

    figures: dict[str, bytes] = {}
    names = metrics.get("preferred_direction_name")
    for monitor in run.built.spike_monitors:
        # The store has every record, also those of a run before a resume; memory only this run's.
        chunk = None
        if hasattr(run.store, "read_spikes"):
            try:
                chunk = run.store.read_spikes(monitor)
            except (OSError, KeyError, ValueError):
                chunk = None
        chunks = run.recorded_chunks.get(monitor, [])
        if chunk is None and chunks:
            chunk = SpikeChunk.concatenate(chunks).canonical()
        if chunk is not None and len(chunk):
            raster = _raster_chunk(chunk, run.spec.steps_per_sample)
            sample_ms = None if raster.sample is None else run.spec.steps_per_sample * run.spec.dt
            # The maps of a convolutional population, labelled like the kernel plots.
            groups = None
            if len(raster.shape) == 3 and raster.shape[0] <= 16:
                groups = [_map_label(index, names) for index in range(raster.shape[0])]
            figures[f"raster_{monitor}"] = plots.spike_raster(
                raster, title=f"{monitor}: spikes of the recorded samples", sample_ms=sample_ms, group_labels=groups
            )

    for name, connection in run.built.network.connections.items():
        weight = connection.weight.detach().to("cpu")
        maps = weight.shape[0] if isinstance(connection, Conv2d) else 0
        map_labels = [_map_label(index, names) for index in range(maps)]
        if isinstance(connection, Conv2d):
            figures[f"weights_{name}"] = plots.kernel_grid(weight, labels=map_labels, title=f"{name}: kernel weights")
        elif type(connection) is Dense:
            pre_shape = connection.pre_shape
            image = tuple(pre_shape) if len(pre_shape) in (2, 3) else _square_image(math.prod(pre_shape))
            if image is not None:
                figures[f"weights_{name}"] = plots.weight_grid(weight, image, title=f"{name}: input weights")
        if connection.delay is not None:
            delays = connection.delay.detach().to("cpu")
            if isinstance(connection, Conv2d) and delays.shape == weight.shape:
                figures[f"delay_kernels_{name}"] = plots.kernel_grid(
                    delays, labels=map_labels, title=f"{name}: kernel delays", unit="delay (ms)"
                )
            if delays.shape == weight.shape:
                # Only real synapses: a lateral connection has none from a neuron to itself, nor between excluded pairs.
                from ember.learning.base import existing_weights

                delays = delays[existing_weights(connection).to("cpu")]
            # A histogram of delays that are all equal shows nothing new; parameters.safetensors contains them.
            if delays.numel() and bool((delays != delays.reshape(-1)[0]).any()):
                figures[f"delays_{name}"] = plots.delay_histogram(delays, title=f"{name}: delays")

    curve = metrics.get("accuracy_curve")
    if curve and curve["samples"]:
        figures["accuracy"] = plots.accuracy_curve(curve["samples"], curve["accuracy"], title="training accuracy")
    if "confusion_matrix" in metrics:
        accuracy = metrics.get("accuracy")
        title = "confusion matrix" if accuracy is None else f"confusion matrix (accuracy {100 * accuracy:.1f}%)"
        figures["confusion_matrix"] = plots.confusion_matrix_plot(torch.tensor(metrics["confusion_matrix"]), title=title)
    if "direction_selectivity" in metrics:
        labels = [_map_label(index, names, separator="\n") for index in range(len(metrics["direction_selectivity"]))]
        figures["direction_selectivity"] = plots.bar_chart(
            labels, metrics["direction_selectivity"], ylabel="direction selectivity index", title="direction selectivity"
        )
    return figures
