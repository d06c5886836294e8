"""The benchmark workloads: model parameters, case lists, input data and byte counts.

Every framework builds the same model from these definitions, so this module
uses only the standard library and numpy: it is imported by Ember's process
and by each peer's process, each in its own virtual environment.

Workloads (dt = 1 ms everywhere, float32):

* W1, Diehl & Cook training: 784 Poisson inputs (0 to 63.75 Hz) drive N
  adaptive-threshold LIF neurons through a dense connection with online pair
  STDP; each neuron inhibits all the others (lateral inhibition, one step of
  delay). One sample is 250 steps; neuron state and traces are reset at the
  start of every sample, thresholds and weights carry over.
* W2, plain LIF forward: 1000 Bernoulli inputs at 20 Hz drive N LIF neurons
  through a dense connection for 1000 steps, with and without pair STDP.
* W3, heterogeneous delays: W2 at N = 1000 with a per-synapse delay drawn
  uniformly from the whole steps 0 to 20 ms.

Weights are voltage jumps in mV (a delta synapse): a presynaptic spike that
arrives at step ``t`` adds its weight to the membrane potential at step ``t``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The step length of every workload, in ms.
DT_MS = 1.0

#: Seeds of the data shared by all frameworks: weights, delays and images.
WEIGHT_SEED = 20250101
DELAY_SEED = 20250102
IMAGE_SEED = 20250103

WORKLOADS: tuple[str, ...] = ("W1", "W2", "W3", "S1")


@dataclass(frozen=True)
class PairSTDP:
    """Pair-based STDP with exponential traces and hard weight bounds.

    Each side keeps a trace that decays with its time constant and is set to
    1 when its neuron spikes. A postsynaptic spike adds ``eta_post`` times the
    presynaptic trace to the weight (potentiation); a presynaptic spike
    subtracts ``eta_pre`` times the postsynaptic trace (depression). Updates
    are summed over the batch, then the weights are clipped to
    ``[w_min, w_max]``.

    Args:
        eta_post: potentiation per unit of presynaptic trace, in mV.
        eta_pre: depression per unit of postsynaptic trace, in mV.
        tau_pre: decay time constant of the presynaptic trace, in ms.
        tau_post: decay time constant of the postsynaptic trace, in ms.
        w_min: lower hard bound on weights, in mV.
        w_max: upper hard bound on weights, in mV.
    """

    eta_post: float
    eta_pre: float
    tau_pre: float
    tau_post: float
    w_min: float
    w_max: float


@dataclass(frozen=True)
class DiehlCookParameters:
    """Parameters of W1, after Diehl & Cook (2015) with voltage-jump (delta) synapses.

    Voltages in mV, times in ms, rates in Hz. The excitatory cells are LIF
    neurons whose threshold is ``v_threshold + theta``; ``theta`` rises by
    ``theta_plus`` at each spike and decays with ``tau_theta``.
    """

    input_size: int = 784
    max_rate_hz: float = 63.75
    steps_per_sample: int = 250
    v_rest: float = -65.0
    v_reset: float = -65.0
    v_threshold: float = -52.0
    tau_membrane: float = 100.0
    refractory: float = 5.0
    theta_plus: float = 0.05
    tau_theta: float = 1e7
    weight_scale: float = 0.3
    inhibition: float = 17.5
    stdp: PairSTDP = PairSTDP(eta_post=1e-2, eta_pre=1e-4, tau_pre=20.0, tau_post=20.0, w_min=0.0, w_max=1.0)


@dataclass(frozen=True)
class ForwardParameters:
    """Parameters of W2 and W3: voltages in mV, times in ms, rates in Hz.

    Initial weights are drawn from ``U[0, weight_max)`` mV. With 1000 inputs
    at 20 Hz the mean drive settles 20 mV above rest, past the 15 mV gap to
    the threshold, so the neurons fire at a few tens of Hz.
    """

    input_size: int = 1000
    input_rate_hz: float = 20.0
    steps: int = 1000
    v_rest: float = -65.0
    v_reset: float = -65.0
    v_threshold: float = -50.0
    tau_membrane: float = 20.0
    refractory: float = 2.0
    weight_max: float = 0.1
    max_delay: float = 20.0
    stdp: PairSTDP = PairSTDP(eta_post=1e-4, eta_pre=1.2e-4, tau_pre=20.0, tau_post=20.0, w_min=0.0, w_max=0.1)


W1 = DiehlCookParameters()
FORWARD = ForwardParameters()


@dataclass(frozen=True)
class Case:
    """One benchmark configuration.

    Args:
        workload: ``"W1"``, ``"W2"`` or ``"W3"``.
        n: the number of postsynaptic neurons.
        batch: the number of samples simulated side by side.
        stdp: whether pair STDP trains the input weights.
        units: the work of one timed run: samples for W1 (each
            ``steps_per_sample`` steps), steps for W2 and W3.
        min_units: the minimum work of a timed run. A slow framework gets
            fewer units to stay within the time budget, but never fewer.
    """

    workload: str
    n: int
    batch: int
    stdp: bool
    units: int
    min_units: int

    def __post_init__(self) -> None:
        if self.workload not in ("W1", "W2", "W3"):
            raise ValueError(f"workload must be 'W1', 'W2' or 'W3', got {self.workload!r}")
        for name in ("n", "batch", "units", "min_units"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.min_units > self.units:
            raise ValueError(f"min_units ({self.min_units}) must not exceed units ({self.units})")

    @property
    def delays(self) -> bool:
        """Whether synapses carry heterogeneous delays (W3)."""
        return self.workload == "W3"

    @property
    def input_size(self) -> int:
        return W1.input_size if self.workload == "W1" else FORWARD.input_size

    @property
    def steps_per_unit(self) -> int:
        """Steps in one unit of work: a sample of 250 steps for W1, one step otherwise."""
        return W1.steps_per_sample if self.workload == "W1" else 1

    @property
    def rule(self) -> PairSTDP:
        return W1.stdp if self.workload == "W1" else FORWARD.stdp

    @property
    def key(self) -> str:
        """A short identifier, for example ``W2-n1000-b32-stdp``."""
        return f"{self.workload}-n{self.n}-b{self.batch}" + ("-stdp" if self.stdp else "")

    @property
    def title(self) -> str:
        """A readable name, for example ``W2 N=1000 B=32 STDP``."""
        return f"{self.workload} N={self.n} B={self.batch}" + (" STDP" if self.stdp else "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown case fields {unknown}; expected {sorted(names)}")
        return cls(**data)


def _w1(n: int, batch: int, samples: int) -> Case:
    return Case("W1", n, batch, True, units=samples, min_units=1)


def _forward(workload: str, n: int, batch: int, stdp: bool, steps: int, min_steps: int = 20) -> Case:
    return Case(workload, n, batch, stdp, units=steps, min_units=min(min_steps, steps))


def full_cases() -> list[Case]:
    """Return every case of the full run, in the order they are run."""
    cases = [_w1(n, batch, samples=4 if batch == 1 else 1) for n in (100, 400, 1600) for batch in (1, 32)]
    cases += [
        _forward("W2", n, batch, stdp, FORWARD.steps)
        for n in (1000, 10000)
        for stdp in (False, True)
        for batch in (1, 32)
    ]
    cases += [_forward("W3", 1000, batch, stdp, FORWARD.steps) for stdp in (False, True) for batch in (1, 32)]
    return cases


def quick_cases() -> list[Case]:
    """Return the cases of ``--quick``: smaller sizes and shorter runs."""
    cases = [_w1(100, 1, 2), _w1(100, 32, 1), _w1(400, 1, 1)]
    # Runs as short as 5 steps keep a framework that needs seconds per step within a few minutes.
    cases += [_forward("W2", 1000, batch, stdp, 500, min_steps=5) for stdp in (False, True) for batch in (1, 32)]
    cases += [_forward("W3", 1000, batch, False, 500, min_steps=5) for batch in (1, 32)]
    return cases


def select_cases(cases: list[Case], only: list[str] | None) -> list[Case]:
    """Keep the cases whose workload (``W2``) or key (``W2-n1000-b32-stdp``) is in ``only``; all when ``only`` is None."""
    if not only:
        return list(cases)
    unknown = sorted(set(only) - set(WORKLOADS) - {case.key for case in cases})
    if unknown:
        raise ValueError(
            f"--only names unknown workloads or cases {unknown}; choose from {', '.join(WORKLOADS)} "
            f"or case keys such as {cases[0].key}"
        )
    return [case for case in cases if case.workload in only or case.key in only]


# ----------------------------------------------------------------- shared data


def input_weights(case: Case) -> np.ndarray:
    """Return the initial input weights in mV, shape ``(input_size, n)``, float32.

    W1 draws ``weight_scale * U[0, 1)``; W2 and W3 draw ``U[0, weight_max)``.
    The same seed gives the same matrix in every framework's process.

    The matrix is drawn in blocks of rows, which take the same values from
    the generator as one draw of the whole matrix. Drawing it whole would
    hold two float64 copies (152 MiB at N = 10000) at once, and that
    transient, not the framework under test, would set every process's peak
    memory.
    """
    rng = np.random.default_rng([WEIGHT_SEED, case.input_size, case.n])
    scale = W1.weight_scale if case.workload == "W1" else FORWARD.weight_max
    weights = np.empty((case.input_size, case.n), dtype=np.float32)
    for start in range(0, case.input_size, _DRAW_ROWS):
        stop = min(start + _DRAW_ROWS, case.input_size)
        weights[start:stop] = scale * rng.random((stop - start, case.n))
    return weights


#: Rows of the weight matrix drawn at a time by :func:`input_weights`.
_DRAW_ROWS = 64


def input_delays(case: Case) -> np.ndarray:
    """Return the per-synapse delays of W3 in ms, whole steps from 0 to ``max_delay``.

    Shape ``(input_size, n)``, float32.

    Raises:
        ValueError: if the case has no delays.
    """
    if not case.delays:
        raise ValueError(f"case {case.key} has no delays; only W3 does")
    rng = np.random.default_rng([DELAY_SEED, case.input_size, case.n])
    steps = rng.integers(0, int(round(FORWARD.max_delay / DT_MS)) + 1, size=(case.input_size, case.n))
    return (steps * DT_MS).astype(np.float32)


def sample_images(count: int) -> np.ndarray:
    """Return ``count`` synthetic 28 x 28 images as input rates in Hz, shape ``(count, 784)``.

    No data set is read. Each image lights about 19 % of its pixels (the
    fraction of MNIST digits) with intensities from U[64, 256). A pixel of
    intensity ``p`` fires at ``p / 4`` Hz, so rates span 0 to 63.75 Hz as in
    Diehl & Cook (2015).
    """
    rng = np.random.default_rng([IMAGE_SEED, count])
    lit = rng.random((count, W1.input_size)) < 0.19
    intensity = rng.uniform(64.0, 256.0, size=(count, W1.input_size)).clip(max=255.0)
    return (np.where(lit, intensity, 0.0) / 255.0 * W1.max_rate_hz).astype(np.float32)


def images_for_run(case: Case, samples: int) -> np.ndarray:
    """Return the input rates of one W1 run in Hz, shape ``(samples, batch, 784)``."""
    rates = sample_images(samples * case.batch)
    return rates.reshape(samples, case.batch, W1.input_size)


def input_spike_probability(case: Case) -> float:
    """Return the mean probability that one input spikes in one step."""
    if case.workload == "W1":
        return float(sample_images(64).mean()) * DT_MS / 1000.0
    return FORWARD.input_rate_hz * DT_MS / 1000.0


# ---------------------------------------------------------------- byte counts

FLOAT_BYTES = 4


def bytes_per_step(case: Case, output_rate_hz: float) -> dict[str, float]:
    """Estimate the bytes an event-driven simulation must move per step.

    The count assumes the least traffic a step can have. Only the weight rows
    of inputs that spiked are read, once per step and shared by the batch.
    Each neuron's state is read and written once. STDP writes back the rows
    that the step read (one pass can send a row out and update it), reads
    and writes every trace, and with a batch also reads and writes the
    columns of neurons that spiked. With one sample the potentiation of a
    column can wait until its rows are read (Ember's deferred potentiation),
    so the columns add no traffic of their own. With delays, each delivered
    weight is written once into a ring buffer, and the slot of the current
    step is read and cleared.

    Args:
        case: the case.
        output_rate_hz: the mean firing rate of the postsynaptic neurons, in Hz.

    Returns:
        A dict with the terms in bytes (``weights``, ``neurons``, ``stdp``,
        ``delays``, ``lateral``) and their ``total``.
    """
    p_in = input_spike_probability(case)
    p_out = output_rate_hz * DT_MS / 1000.0
    inputs, n, batch = case.input_size, case.n, case.batch
    # Distinct input rows active in at least one sample of the batch.
    rows = inputs * (1.0 - (1.0 - p_in) ** batch)
    columns = n * (1.0 - (1.0 - p_out) ** batch)
    terms = {"weights": rows * n * FLOAT_BYTES}

    # v and refractory count read and written, spikes written; W1 adds theta.
    neuron_words = 5 + (2 if case.workload == "W1" else 0)
    terms["neurons"] = batch * n * neuron_words * FLOAT_BYTES
    terms["stdp"] = 0.0
    if case.stdp:
        traces = 2 * batch * (inputs + n) * FLOAT_BYTES
        column_words = columns * inputs if batch > 1 else 0.0
        terms["stdp"] = (rows * n + 2 * column_words) * FLOAT_BYTES + traces
    terms["delays"] = 0.0
    if case.delays:
        # One delay per delivered synapse, one scattered write, and the current slot read and cleared.
        terms["delays"] = batch * inputs * p_in * n * 2 * FLOAT_BYTES + 2 * batch * n * FLOAT_BYTES
    terms["lateral"] = 0.0
    if case.workload == "W1":
        terms["lateral"] = batch * n * p_out * n * FLOAT_BYTES
    terms["total"] = float(sum(terms.values()))
    return terms


def per_unit_label(workload: str) -> str:
    """Return the unit that wall time is normalised to: a sample (W1) or 1000 steps."""
    return "s per sample" if workload == "W1" else "s per 1000 steps"


def seconds_per_unit(case: Case, seconds_per_step_sample: float) -> float:
    """Convert seconds per sample-step to the workload's reporting unit.

    W1 reports seconds per sample (250 steps of one sample); W2 and W3 report
    seconds per 1000 steps of the whole batch.
    """
    if case.workload == "W1":
        return seconds_per_step_sample * W1.steps_per_sample
    return seconds_per_step_sample * 1000.0 * case.batch

