"""The job spec: what to run, on which data, for how long, and what to keep.

A job presents samples one after another (or ``batch_size`` side by side).
Each sample is shown for ``presentation_ms``, followed by ``rest_ms`` without
input. The job's ``kind`` sets the phases:

==================  ==========================================================
kind                phases
==================  ==========================================================
``simulate``        run the network for ``duration_ms``, or over the test
                    samples, with learning off
``train``           ``epochs`` passes over the training samples, learning on
``evaluate``        learning off: label neurons on the training samples, then
                    measure the read-out on the test samples
``train_evaluate``  ``train``, then ``evaluate``
==================  ==========================================================
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationInfo, model_validator

from ember.spec.common import SpecModel, spec_error, spec_errors
from ember.spec.limits import Limits
from ember.spec.network import NetworkSpec
from ember.units import STEP_RTOL

JobKind = Literal["simulate", "train", "evaluate", "train_evaluate"]


class _DataBase(SpecModel):
    train_samples: int | None = Field(None, ge=1, description="training samples per epoch; null: the whole split")
    test_samples: int | None = Field(None, ge=1, description="test samples; null: the whole split")
    label_samples: int | None = Field(
        None, ge=1, description="training samples used to label neurons; null: train_samples"
    )
    shuffle: bool = Field(True, description="present training samples in a new order each epoch, drawn from the seed")

    def split_sizes(self) -> dict[str, int]:
        """The sizes of the train and test splits."""
        return dict(SPLIT_SIZES[self.dataset])

    def load_options(self, job_seed: int, dt: float) -> dict[str, Any]:
        """The keyword options for ``ember.data.load_dataset``."""
        return {}


class ImageDataSpec(_DataBase):
    """Real digit images, read offline from pip packages.

    ``mnist`` is the full MNIST (60 000 training and 10 000 test images),
    ``mnist5k`` 5 000 real MNIST images (4 000 train, 1 000 test), ``digits``
    the 1 797 UCI 8x8 digits (1 437 train, 360 test). Pixel values are scaled
    to [0, 1] before the input encodes them.
    """

    dataset: Literal["mnist", "mnist5k", "digits"]


class _GeneratedDataBase(_DataBase):
    num_train: int = Field(1000, ge=1, description="size of the generated training split")
    num_test: int = Field(250, ge=1, description="size of the generated test split")
    duration_ms: float = Field(gt=0.0, description="length of each trial in ms, at most presentation_ms")
    seed: int | None = Field(None, ge=0, description="seed of the generated data; null: the job seed")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "test": self.num_test}

    def load_options(self, job_seed: int, dt: float) -> dict[str, Any]:
        options = self.model_dump(
            exclude={"dataset", "train_samples", "test_samples", "label_samples", "shuffle", "num_train", "num_test", "seed"}
        )
        options["seed"] = job_seed if self.seed is None else self.seed
        options["dt"] = dt
        return options


class PatternDataSpec(_GeneratedDataBase):
    """Poisson noise trials of which about half hold one occurrence of a fixed spike pattern (label 1)."""

    dataset: Literal["pattern"]
    num_inputs: int = Field(100, ge=1, description="inputs (spike trains) per trial")
    pattern_size: int = Field(50, ge=1, description="inputs that take part in the pattern")
    span_ms: float = Field(20.0, gt=0.0, description="length of the pattern in ms")
    duration_ms: float = Field(100.0, gt=0.0, description="length of each trial in ms, at most presentation_ms")
    rate_hz: float = Field(10.0, ge=0.0, description="background rate of every input in Hz")
    noise: Literal["keep", "remove"] = Field("keep", description="keep or remove the noise of pattern inputs during the pattern")

    @model_validator(mode="after")
    def _sizes(self) -> PatternDataSpec:
        if self.pattern_size > self.num_inputs:
            raise ValueError(f"pattern_size ({self.pattern_size}) must not exceed num_inputs ({self.num_inputs})")
        if self.span_ms > self.duration_ms:
            raise ValueError(f"span_ms ({self.span_ms}) must not exceed duration_ms ({self.duration_ms})")
        return self


class RdkDataSpec(_GeneratedDataBase):
    """Random-dot kinematograms labelled by motion direction, as spike trains ``(T, 1, height, width)``."""

    dataset: Literal["rdk"]
    num_directions: Literal[4, 8] = 4
    height: int = Field(13, ge=1, description="grid rows")
    width: int = Field(13, ge=1, description="grid columns")
    num_dots: int = Field(10, ge=1, description="dots per trial")
    duration_ms: float = Field(30.0, gt=0.0, description="length of each trial in ms, at most presentation_ms")
    speed_px_per_ms: float = Field(1.0, ge=0.0, description="speed along each axis in pixels per ms")
    coherence: float = Field(1.0, ge=0.0, le=1.0, description="fraction of dots that move in the trial's direction")


DataSpec = Annotated[Union[ImageDataSpec, PatternDataSpec, RdkDataSpec], Field(discriminator="dataset")]


class MaxRateReadout(SpecModel):
    """Diehl and Cook (2015) read-out: label each neuron with the class it responds to most, then vote.

    Reports ``accuracy`` on the test samples and a confusion matrix. With
    ``curve_every`` set, it also reports a running training accuracy every
    ``curve_every`` training samples: the neurons are labelled from the
    activity of the previous ``curve_every`` samples and classify the current
    ones.
    """

    type: Literal["max_rate_labels"]
    population: str = Field(description="the population whose spikes are counted")
    curve_every: int | None = Field(None, ge=1, description="training samples per point of the accuracy curve")


class PatternDetectionReadout(SpecModel):
    """Hit and false-alarm rates of a detector population on samples with and without the pattern.

    A sample counts as detected when the population emits at least
    ``min_spikes`` spikes during it. Test samples with label 1 contain the
    pattern; label 0 samples are noise only.
    """

    type: Literal["pattern_detection"]
    population: str
    min_spikes: int = Field(1, ge=1, description="spikes that count as a detection")


class DirectionSelectivityReadout(SpecModel):
    """Direction selectivity of each feature map (first axis of the population) over the test samples.

    Reports per map the preferred direction and the index
    ``(R_pref - R_opposite) / (R_pref + R_opposite)``, and how many distinct
    directions the maps prefer.
    """

    type: Literal["direction_selectivity"]
    population: str


ReadoutSpec = Annotated[
    Union[MaxRateReadout, PatternDetectionReadout, DirectionSelectivityReadout],
    Field(discriminator="type"),
]


class RecordSpec(SpecModel):
    """What the job keeps besides its metrics."""

    samples: int = Field(
        10, ge=0, description="monitors record the first this many samples of each phase (0: none)"
    )
    phases: list[Literal["train", "label", "test", "simulate"]] = Field(
        default_factory=lambda: ["train", "label", "test", "simulate"], description="phases in which monitors record"
    )
    parameters: bool = Field(True, description="write the learned tensors to parameters.safetensors")
    plots: bool = Field(True, description="draw plots/*.png")


class LowActivityRetrySpec(SpecModel):
    """Show a sample again, with stronger input, when a population fires too little for it.

    Diehl and Cook (2015) present an image again, with the input rates raised,
    when the excitatory layer fires fewer than 5 spikes for it. After each
    presentation the runner counts the spikes of ``population`` per sample;
    every sample with fewer than ``min_spikes`` is presented again, from a
    reset state as a new sample would be, with the rate of a full-intensity
    input unit (``max_rate_hz`` of each Poisson data input) raised by
    ``rate_increase_hz`` per retry, until it reaches ``min_spikes`` or has
    been retried ``max_retries`` times. The spike counts of the last
    presentation are the sample's counts. Only the phases in ``phases`` retry.
    Learning stays as in the phase (on in training, where retries also raise
    adaptive thresholds), and spike monitors do not record retries.

    Retry ``r`` (from 1) of a batch whose first sample is number ``n`` sets
    the network's ``sample_key`` to ``n + r * N``, with ``N`` the job's total
    number of samples, so its random draws differ from those of every other
    presentation and are the same in every run.

    NOTE: :meth:`JobSpec.estimate` and the ``EMBER_MAX_STEPS`` limit count
    first presentations only; retries can add up to ``max_retries`` times as
    many steps.
    """

    population: str = Field(description="the population whose spikes are counted per sample")
    min_spikes: int = Field(5, ge=1, description="spikes per sample below which the sample is shown again")
    rate_increase_hz: float = Field(
        gt=0.0, le=10_000.0, description="rise of the full-intensity input rate per retry, in Hz"
    )
    max_retries: int = Field(5, ge=1, le=100, description="maximum presentations of one sample after its first")
    phases: list[Literal["train", "label", "test", "simulate"]] = Field(
        default_factory=lambda: ["train", "label", "test", "simulate"],
        min_length=1,
        description="phases in which samples are retried; training retries also learn and raise adaptive thresholds",
    )


class JobSpec(SpecModel):
    """A complete job: the network, the data, the schedule and what to record.

    Validate with ``JobSpec.model_validate(document)``; pass
    ``context={"limits": Limits(...)}`` to check against other size limits
    than those of the ``EMBER_MAX_*`` environment variables. A valid spec is
    within the limits and has a size, memory and time estimate
    (:meth:`estimate`).

    Examples:
        >>> spec = JobSpec.model_validate({
        ...     "kind": "simulate", "duration_ms": 100.0, "dt": 1.0,
        ...     "network": {
        ...         "inputs": {"noise": {"type": "background", "shape": [10], "rate_hz": 20.0}},
        ...         "populations": {"cells": {"type": "lif", "shape": [5]}},
        ...         "connections": {"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 4.0}},
        ...     },
        ... })
        >>> spec.estimate().steps
        100
    """

    version: Literal[1] = Field(1, description="the spec format version")
    name: str | None = Field(None, max_length=200, description="a name for people")
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)
    kind: JobKind
    network: NetworkSpec
    data: DataSpec | None = None
    readout: ReadoutSpec | None = None
    epochs: int = Field(1, ge=1, description="passes over the training samples")
    presentation_ms: float = Field(350.0, gt=0.0, description="time each sample is shown, in ms")
    rest_ms: float = Field(150.0, ge=0.0, description="time without input after each sample, in ms")
    duration_ms: float | None = Field(None, gt=0.0, description="run time of a simulate job without data, in ms")
    reset_between_samples: bool = Field(
        True, description="reset neuron and synapse state before each sample (learned tensors and thresholds stay)"
    )
    dt: float = Field(0.5, gt=0.0, le=100.0, description="the step length in ms")
    batch_size: int = Field(1, ge=1, description="samples simulated side by side in training")
    eval_batch_size: int | None = Field(None, ge=1, description="samples side by side when learning is off; default batch_size")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="the seed of every random draw")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="auto: cuda when available, else cpu")
    dtype: Literal["float32", "float64"] = "float32"
    checkpoint_every: int | None = Field(None, ge=1, description="samples between checkpoints; null: only when cancelled")
    record: RecordSpec = Field(default_factory=RecordSpec)
    low_activity_retry: LowActivityRetrySpec | None = Field(
        None, description="present samples again with stronger input when a population fires too little; null: off"
    )
    initial_parameters: str | None = Field(
        None, description="a parameters.safetensors file whose tensors replace the initial ones (local runs)"
    )

    # ---------------------------------------------------------------- checks

    @model_validator(mode="after")
    def _check_job(self, info: ValidationInfo) -> JobSpec:
        problems = self._schedule_problems() + self._readout_problems() + self._retry_problems()
        if problems:
            raise spec_errors(problems)
        cycle = self.network.cycle_without_delay(self.dt)
        if cycle:
            raise spec_error(
                "cycle_without_delay",
                f"connections {cycle} form a cycle in which every delay may be below one step (dt = {self.dt} ms); "
                "give one of them a delay with min_ms of at least dt",
                ("network", "connections", cycle[0]),
                cycle[0],
            )
        limits = (info.context or {}).get("limits") if info.context else None
        self._check_limits(limits if isinstance(limits, Limits) else Limits())
        return self

    def _schedule_problems(self) -> list[tuple[str, str, tuple, Any]]:
        problems: list[tuple[str, str, tuple, Any]] = []
        for field in ("presentation_ms", "rest_ms", "duration_ms"):
            value = getattr(self, field)
            if value is None:
                continue
            ratio = value / self.dt
            if abs(ratio - round(ratio)) > STEP_RTOL * max(1.0, ratio):
                problems.append(
                    ("whole_steps", f"{field} = {value} ms is not a whole number of steps at dt = {self.dt} ms", (field,), value)
                )
        data_inputs = [name for name, spec in self.network.inputs.items() if spec.data_driven]
        if self.data is None:
            if self.kind != "simulate":
                problems.append(("data_required", f"a {self.kind!r} job needs a 'data' section", ("data",), None))
            elif self.duration_ms is None:
                problems.append(("duration_required", "a simulate job without data needs duration_ms", ("duration_ms",), None))
            for name in data_inputs:
                problems.append(
                    ("data_required", f"input {name!r} presents data samples, so the job needs a 'data' section", ("network", "inputs", name, "type"), self.network.inputs[name].type)
                )
        elif not data_inputs:
            problems.append(
                ("data_unused", "the job has data but no input presents it; add an input of type poisson, latency, rank_order or events", ("data",), None)
            )
        if isinstance(self.data, _GeneratedDataBase) and self.data.duration_ms > self.presentation_ms + 1e-9:
            problems.append(
                ("trial_too_long", f"trials of {self.data.duration_ms} ms do not fit in presentation_ms = {self.presentation_ms} ms", ("data", "duration_ms"), self.data.duration_ms)
            )
        if self.data is not None and self.duration_ms is not None:
            problems.append(("duration_with_data", "duration_ms applies only to jobs without data; remove it", ("duration_ms",), self.duration_ms))
        if self.kind in ("train", "train_evaluate"):
            if not any(connection.learning for connection in self.network.connections.values()):
                problems.append(
                    ("learning_required", f"a {self.kind!r} job needs at least one connection with learning rules", ("network", "connections"), None)
                )
        return problems

    def _readout_problems(self) -> list[tuple[str, str, tuple, Any]]:
        problems: list[tuple[str, str, tuple, Any]] = []
        if self.kind in ("evaluate", "train_evaluate") and self.readout is None:
            problems.append(("readout_required", f"a {self.kind!r} job needs a 'readout' section", ("readout",), None))
        if self.readout is not None:
            population = self.readout.population
            if population not in self.network.populations:
                problems.append(
                    ("unknown_population", f"population {population!r} is not in the network", ("readout", "population"), population)
                )
            elif isinstance(self.readout, DirectionSelectivityReadout) and len(self.network.populations[population].shape) < 2:
                problems.append(
                    ("shape_mismatch", "direction selectivity needs a population of shape (maps, ...positions)", ("readout", "population"), population)
                )
        return problems

    def _retry_problems(self) -> list[tuple[str, str, tuple, Any]]:
        retry = self.low_activity_retry
        if retry is None:
            return []
        problems: list[tuple[str, str, tuple, Any]] = []
        if retry.population not in self.network.populations:
            problems.append(
                (
                    "unknown_population",
                    f"population {retry.population!r} is not in the network; name one of {sorted(self.network.populations)}",
                    ("low_activity_retry", "population"),
                    retry.population,
                )
            )
        if self.data is None:
            problems.append(
                ("data_required", "low_activity_retry presents data samples again, so the job needs a 'data' section", ("low_activity_retry",), None)
            )
        elif not any(spec.type == "poisson" and spec.data_driven for spec in self.network.inputs.values()):
            problems.append(
                (
                    "poisson_input_required",
                    "low_activity_retry raises the rate of Poisson data inputs, but the network has none; "
                    "add an input of type poisson or remove low_activity_retry",
                    ("low_activity_retry",),
                    None,
                )
            )
        return problems

    def _check_limits(self, limits: Limits) -> None:
        estimate = self.estimate()
        checks = [
            ("neurons", estimate.neurons, limits.max_neurons, ("network", "populations"), "EMBER_MAX_NEURONS"),
            ("synapses", estimate.synapses, limits.max_synapses, ("network", "connections"), "EMBER_MAX_SYNAPSES"),
            ("steps", estimate.steps, limits.max_steps, ("epochs",), "EMBER_MAX_STEPS"),
            ("samples", estimate.samples, limits.max_samples, ("data",), "EMBER_MAX_SAMPLES"),
            ("memory", estimate.bytes, limits.max_memory_bytes, ("network",), "EMBER_MAX_MEMORY_BYTES"),
        ]
        for batch_field in ("batch_size", "eval_batch_size"):
            value = getattr(self, batch_field)
            if value is not None:
                checks.append((batch_field, value, limits.max_batch_size, (batch_field,), "EMBER_MAX_BATCH_SIZE"))
        problems = [
            (
                "limit_exceeded",
                f"the job has {_quantity(value, what)}, above the limit of {_quantity(limit, what)}; "
                f"make the job smaller or raise {variable}",
                loc,
                value,
            )
            for what, value, limit, loc, variable in checks
            if value > limit
        ]
        if problems:
            raise spec_errors(problems)

    # ---------------------------------------------------------------- schedule

    @property
    def steps_per_sample(self) -> int:
        """Steps of one sample: presentation plus rest."""
        return int(round(self.presentation_ms / self.dt)) + int(round(self.rest_ms / self.dt))

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size if self.eval_batch_size is not None else self.batch_size

    def phase_samples(self, split_sizes: dict[str, int] | None = None) -> dict[str, int]:
        """Return the number of samples each phase presents (one epoch of training counted ``epochs`` times).

        Args:
            split_sizes: the sizes of the data set's ``train`` and ``test``
                splits, when known; without them, a phase whose count is not
                given in the spec is estimated from :data:`SPLIT_SIZES`.
        """
        if self.data is None:
            return {}
        sizes = self.data.split_sizes()
        sizes.update(split_sizes or {})
        train = _limited(self.data.train_samples, sizes.get("train"))
        test = _limited(self.data.test_samples, sizes.get("test"))
        label = _limited(self.data.label_samples, train)
        phases: dict[str, int] = {}
        if self.kind in ("train", "train_evaluate"):
            phases["train"] = train * self.epochs
        if self.kind in ("evaluate", "train_evaluate"):
            if isinstance(self.readout, MaxRateReadout):
                phases["label"] = label
            phases["test"] = test
        if self.kind == "simulate":
            phases["simulate"] = test
        return phases

    def estimate(self, split_sizes: dict[str, int] | None = None):
        """Estimate size, memory and run time; see :class:`ember.spec.estimate.Estimate`."""
        from ember.spec.estimate import estimate_job

        return estimate_job(self, split_sizes)

    def fingerprint(self) -> str:
        """Return a SHA-256 of the parts of the spec that determine the results.

        ``name``, ``tags``, ``device``, ``checkpoint_every`` and ``record`` do
        not enter it, so a job may be resumed with other values of these. An
        absent ``low_activity_retry`` does not enter it either, so specs
        without it keep the fingerprint they had before the option existed.
        """
        import hashlib
        import json

        excluded = {"name", "tags", "device", "checkpoint_every", "record"}
        if self.low_activity_retry is None:
            excluded.add("low_activity_retry")
        document = self.model_dump(mode="json", exclude=excluded)
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


#: Split sizes of the packaged image data sets, as ember.data loads them.
SPLIT_SIZES: dict[str, dict[str, int]] = {
    "mnist": {"train": 60000, "test": 10000},
    "mnist5k": {"train": 4000, "test": 1000},
    "digits": {"train": 1437, "test": 360},
}


def _limited(count: int | None, size: int | None) -> int:
    if count is None:
        return int(size or 0)
    return count if size is None else min(count, size)


def steps_of(duration_ms: float, dt: float) -> int:
    """Return ``duration_ms / dt`` as a whole number of steps (validated specs only)."""
    return int(math.floor(duration_ms / dt + 0.5))


def _quantity(value: int, what: str) -> str:
    """Format a size for a limit message: bytes in GiB/TiB for memory, else a count with its noun."""
    if what != "memory":
        return f"{value:,} {what}"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if value >= size:
            return f"{value / size:,.1f} {unit} of estimated memory ({value:,} bytes)"
    return f"{value:,} bytes of estimated memory"
