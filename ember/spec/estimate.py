"""Size, memory and run-time estimates of a job, computed from its spec alone.

The memory estimate adds up what the job allocates: parameters (weights,
delays, thresholds), per-sample state (neurons, synapses, spikes in flight,
learning traces), working memory of the delivery and learning steps, the
loaded data and the recording buffers. It is an upper estimate, not a
measurement.

The time estimate is a cost model of each phase (training, labelling,
testing, simulating) on the engine that ``Network.run`` picks for it:

- The native kernels (:mod:`ember.native`) run a phase on the CPU when every
  part of the network that acts in it is supported
  (:func:`native_unsupported_reason`). A phase then pays per step, per unit
  and sample (neuron updates, Poisson draws), per synapse event (a spike
  times the synapses it reaches, and the weight updates of learning rules)
  and, around the kernels, per batch and per ``Network.run`` call of the
  runner's Python code.
- Otherwise the PyTorch model applies: each step pays a fixed overhead per
  module (Python and kernel launches) plus a cost per synapse and sample.

Synapse events need firing rates, which the spec does not fix: the model
assumes :data:`POPULATION_RATE_HZ` for every population and derives input
rates from the input and data settings (:func:`_spikes_per_step`). Each job
also pays :data:`JOB_OVERHEAD_S` for loading data, building the network and
writing its results.

NOTE: the ``cpu`` constants are estimates from measurements with one torch
thread on a 2-core x86-64 virtual machine (AMD EPYC) with torch 2.13 and
float32: ``ember run`` of ``api_examples/diehl_cook_quick.json`` and of
smaller variants (fewer samples, other batch sizes, other inputs and rules),
timed in process CPU time. The ``cuda`` constants are rough guesses. Treat
the seconds as an order of magnitude: on that machine, ``ember run`` of
``diehl_cook_quick.json`` and ``delay_learning_pattern.json`` took 1.0 to
1.7 times the estimate (CPU time to wall time under shared load).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict

from ember.spec.connections import Conv2dSpec, DenseSpec, LateralSpec, OneToOneSpec
from ember.spec.inputs import (
    BackgroundInputSpec,
    EventsInputSpec,
    PoissonInputSpec,
    SpikeTimesInputSpec,
)
from ember.spec.learning import DelayAdjustedStdpSpec, DiehlCookStdpSpec, StdpSpec, WeightNormalizationSpec
from ember.spec.monitors import SpikeMonitorSpec, StateMonitorSpec

if TYPE_CHECKING:
    from ember.spec.job import JobSpec

#: Seconds per job for loading the data, building the network, plots and result files.
JOB_OVERHEAD_S = 2.5

# PyTorch engine.
#: Seconds per step per module (node, connection, rule, monitor).
STEP_OVERHEAD_S = {"cpu": 20e-6, "cuda": 60e-6}
#: Seconds per synapse and sample, per step, for delivery and learning.
SYNAPSE_COST_S = {"cpu": 0.5e-9, "cuda": 2.0e-12}
#: Seconds per step per learning rule while training (Python work of the rule's step).
RULE_OVERHEAD_S = {"cpu": 3e-4, "cuda": 5e-4}
#: Seconds per synapse and sample, per step, of a rule that keeps per-synapse
#: arrival times (delay learning, spike-timing rules on delayed connections).
ARRIVAL_RULE_COST_S = {"cpu": 2.0e-7, "cuda": 1.0e-10}

# Native engine (CPU only).
#: Seconds per ``Network.run`` call outside the kernels (checking and binding the plan).
NATIVE_CALL_S = 250e-6
#: Seconds per batch of the runner's Python work (state reset, spike counts, progress).
NATIVE_BATCH_S = 500e-6
#: Seconds per sample of a batch of the runner's Python work.
NATIVE_SAMPLE_S = 25e-6
#: Seconds per step of the kernels, whatever the network's size.
NATIVE_STEP_S = 0.4e-6
#: Seconds per neuron or natively drawn Poisson input unit, per sample and step.
NATIVE_UNIT_S = 1.05e-9
#: Seconds per synapse event (one spike reaching one synapse), per sample.
NATIVE_EVENT_S = 0.2e-9
#: Seconds per synapse event of a connection with delays, which adds through its delay lines.
NATIVE_DELAYED_EVENT_S = 0.6e-9
#: Seconds per weight update of a spike-timing rule, per sample.
NATIVE_LEARN_EVENT_S = 0.7e-9
#: Seconds per synapse, per step, of a rule that times spikes at their arrival, with one sample.
#: With a ``nearest`` trace the kernels touch only the synapses that receive spikes.
NATIVE_ARRIVAL_SYNAPSE_S = {"all_to_all": 0.5e-9, "nearest": 0.13e-9}
#: The same, per synapse and sample, when a batch has several samples. A ``nearest`` trace is
#: kept as arrival steps (W3 N=1000 B=32 with STDP: 11.5 ms per step for 32 million synapse-samples).
NATIVE_ARRIVAL_BATCH_SYNAPSE_S = {"all_to_all": 1.45e-9, "nearest": 0.35e-9}
#: Seconds per step per input whose spikes are computed in Python (non-Poisson encoders, events, spike times).
FRAME_STEP_S = 27e-6
#: Seconds per unit and sample, per step, of such an input.
FRAME_UNIT_S = 2.0e-9
#: Seconds per unit and sample, per step, of a Poisson input in ``exact`` mode (computed in Python).
EXACT_POISSON_UNIT_S = 28e-9
#: Seconds per weight normalization before each training batch, plus the cost per normalized synapse.
NORMALIZE_S = 100e-6
NORMALIZE_SYNAPSE_S = 5e-9

#: Assumed mean firing rate of every population in Hz, for counting synapse events.
POPULATION_RATE_HZ = 5.0
#: Mean pixel intensity in [0, 1] of the image data sets, for the rate of Poisson inputs.
MEAN_INTENSITY = {"mnist": 0.13, "mnist5k": 0.13, "digits": 0.31}
#: Mean intensity assumed for a Poisson input on data without an entry in :data:`MEAN_INTENSITY`.
DEFAULT_INTENSITY = 0.2
#: Steps per ``Network.run`` call of a job without data (the runner's chunk size).
SIMULATION_CHUNK_STEPS = 1000
#: Spike monitor buffer of events held on the device, in events (int64 x 3).
MONITOR_CHUNK_EVENTS = 65536


class Estimate(BaseModel):
    """What a job will allocate and roughly how long it will take.

    Attributes:
        neurons: neurons plus input units.
        synapses: distinct synapses (shared kernel weights once).
        samples: sample presentations of the whole job, all phases.
        steps: simulation steps of the whole job.
        bytes: estimated peak memory in bytes.
        memory: the parts of ``bytes`` by name.
        seconds: estimated run time in s on the job's device (``auto``: CUDA when
            this machine has it), on the native kernels for the phases they can run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    neurons: int
    synapses: int
    samples: int
    steps: int
    bytes: int
    memory: dict[str, int]
    seconds: float


def estimate_job(spec: JobSpec, split_sizes: dict[str, int] | None = None) -> Estimate:
    """Compute the :class:`Estimate` of a job spec.

    Args:
        spec: the job.
        split_sizes: the real sizes of the data splits, when known.
    """
    network = spec.network
    shapes = network.node_shapes()
    element = 8 if spec.dtype == "float64" else 4
    batch = max(spec.batch_size, spec.effective_eval_batch_size)

    neurons = sum(math.prod(shape) for shape in shapes.values())

    synapses = 0
    parameter_bytes = 0
    flight_bytes = 0
    work_bytes = 0
    learning_bytes = 0
    synapse_work = 0  # synapse-sample operations per step, for the time estimate
    arrival_work = 0  # synapses of rules that track per-synapse arrival times
    for connection in network.connections.values():
        pre, post = shapes.get(connection.pre), shapes.get(connection.post)
        if pre is None or post is None or connection.shape_error(pre, post):
            continue
        weights = math.prod(connection.weight_shape(pre, post))
        count = connection.synapse_count(pre, post)
        synapses += weights
        tensors = 2 if connection.delay is not None else 1
        parameter_bytes += weights * tensors * element
        slots = 1
        if connection.delay is not None:
            slots = int(math.floor(connection.delay.effective_max_ms / spec.dt + 1e-6)) + 2
        elif connection.type == "lateral":
            slots = 3
        post_size = math.prod(post)
        flight_bytes += batch * slots * post_size * element
        flight_bytes += batch * post_size * element * 2  # synapse state
        operations = count if not isinstance(connection, Conv2dSpec) else count * connection.positions(post)
        synapse_work += operations
        # Delayed delivery builds weight-sized temporaries; so does learning.
        work_bytes = max(work_bytes, weights * element * (3 if connection.delay is not None else 1))
        for rule in connection.learning:
            pre_size = math.prod(pre)
            learning_bytes += batch * (pre_size + post_size) * element * 3
            if isinstance(rule, DelayAdjustedStdpSpec) or getattr(rule, "timing", None) == "arrival" and connection.delay is not None:
                # Per-synapse timing terms in the synapse layout, for each sample.
                learning_bytes += batch * operations * element * 3
                arrival_work += operations
            synapse_work += operations

    state_bytes = batch * neurons * element * 5
    threshold_bytes = neurons * element

    phases = spec.phase_samples(split_sizes)
    samples = sum(phases.values())
    runs = _phase_runs(spec, phases)
    steps = sum(run.steps for run in runs)

    data_bytes = 0
    if spec.data is not None:
        data_size = max((math.prod(spec.network.inputs[name].shape) for name in spec.network.inputs), default=0)
        stored = sum(phases.values()) if phases else 0
        data_bytes = min(stored, 80000) * data_size * 4

    monitor_bytes = 0
    for monitor in network.monitors.values():
        if isinstance(monitor, SpikeMonitorSpec):
            monitor_bytes += MONITOR_CHUNK_EVENTS * 3 * 8
        elif isinstance(monitor, StateMonitorSpec) and monitor.target in shapes:
            monitor_bytes += monitor.capacity * math.prod(shapes[monitor.target]) * batch * element

    memory = {
        "parameters": parameter_bytes + threshold_bytes,
        "state": state_bytes,
        "spikes_in_flight": flight_bytes,
        "learning": learning_bytes,
        "working": work_bytes,
        "data": data_bytes,
        "monitors": monitor_bytes,
    }
    total = sum(memory.values())

    device = _device(spec)
    # Nodes, connections with their synapses, rules, monitors and the runner's spike counters.
    modules = 2 * len(shapes) + 2 * len(network.connections) + len(network.monitors) + sum(
        len(c.learning) for c in network.connections.values()
    )
    torch_costs = _TorchCosts(device, modules, synapse_work, arrival_work)
    seconds = JOB_OVERHEAD_S
    for run in runs:
        if device == "cpu" and native_unsupported_reason(spec, learning=run.learning) is None:
            seconds += _native_seconds(spec, run)
        else:
            seconds += _torch_seconds(spec, run, torch_costs)
    return Estimate(
        neurons=neurons,
        synapses=synapses,
        samples=samples,
        steps=steps,
        bytes=int(total),
        memory={name: int(value) for name, value in memory.items()},
        seconds=float(seconds),
    )


# --------------------------------------------------------------------------- phases


class _PhaseRun(NamedTuple):
    """What one phase of a job runs: its steps, batches and samples, and whether rules learn."""

    steps: int
    batch: int
    batches: int
    samples: int
    calls_per_batch: int
    learning: bool


def _phase_runs(spec: JobSpec, phases: dict[str, int]) -> list[_PhaseRun]:
    """Return the runs of the job's phases, in the runner's batches (``phases``: samples per phase)."""
    if spec.data is None:
        steps = int(math.floor((spec.duration_ms or 0.0) / spec.dt + 0.5))
        chunks = math.ceil(steps / SIMULATION_CHUNK_STEPS)
        return [_PhaseRun(steps, spec.batch_size, chunks, spec.batch_size * chunks, 1, False)]
    per_sample = spec.steps_per_sample
    presentation = int(round(spec.presentation_ms / spec.dt))
    # Each presentation runs the network once for the presentation and once for the rest.
    calls = 1 if presentation == per_sample else 2
    runs = []
    for name, count in phases.items():
        batch = spec.batch_size if name == "train" else spec.effective_eval_batch_size
        batches = math.ceil(count / batch)
        runs.append(_PhaseRun(batches * per_sample, batch, batches, count, calls, name == "train"))
    return runs


def _device(spec: JobSpec) -> str:
    """Return the device the job runs on, ``cpu`` or ``cuda``, as the runner resolves ``auto``."""
    if spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


# --------------------------------------------------------------------------- PyTorch engine


class _TorchCosts(NamedTuple):
    """The device and the sizes that the PyTorch model charges per step."""

    device: str
    modules: int
    synapse_work: int  # synapse-sample operations per step and sample, delivery plus learning
    arrival_work: int  # synapses of rules that keep per-synapse arrival times


def _torch_seconds(spec: JobSpec, run: _PhaseRun, costs: _TorchCosts) -> float:
    """Return the PyTorch model's seconds for one phase: module overheads plus synapse work per step."""
    device = costs.device
    seconds = run.steps * (costs.modules * STEP_OVERHEAD_S[device] + costs.synapse_work * run.batch * SYNAPSE_COST_S[device])
    if run.learning:
        rules = sum(len(c.learning) for c in spec.network.connections.values())
        seconds += run.steps * (rules * RULE_OVERHEAD_S[device] + costs.arrival_work * run.batch * ARRIVAL_RULE_COST_S[device])
    return seconds


# --------------------------------------------------------------------------- native engine


def native_unsupported_reason(spec: JobSpec, *, learning: bool) -> str | None:
    """Return the first part of a job that the native kernels cannot run, or ``None`` if they run it all.

    Decides from the spec alone, without building the network, whether
    ``Network.run`` would use the native kernels for a phase. Rules act only
    in phases that learn. Elsewhere the runner switches them off, and the
    kernels skip switched-off rules of any kind.

    NOTE: this must follow the ``Unsupported`` checks of
    ``ember/native/plan.py`` and the classes that ``ember/builder.py``
    builds from each spec. It assumes the kernels are built and enabled
    (``EMBER_NATIVE`` is not ``0``) and draw Poisson spikes natively, which
    the runner checks only on the machine that runs the job.

    Args:
        spec: the job.
        learning: whether the phase's rules learn (the training phase).

    Returns:
        A short reason naming the part, or ``None``.
    """
    if _device(spec) != "cpu":
        return "the job runs on CUDA; the native kernels run on the CPU only"
    network = spec.network
    for name, population in network.populations.items():
        if population.type not in ("lif", "adaptive_lif"):
            return f"population {name!r} is {population.type!r}; the kernels run lif and adaptive_lif"
    shapes = network.node_shapes()
    for name, connection in network.connections.items():
        kind = _native_connection_kind(connection, shapes, spec.dt)
        if kind is None:
            return f"connection {name!r} ({connection.type}) is built as a connection type that the kernels do not run"
        if not learning:
            continue
        for rule in connection.learning:
            reason = _native_rule_problem(rule, connection, kind, spec.dt)
            if reason is not None:
                return f"rule {rule.type!r} of connection {name!r}: {reason}"
    for name, monitor in network.monitors.items():
        if not isinstance(monitor, SpikeMonitorSpec):
            return f"monitor {name!r} is a {monitor.type!r} monitor; the kernels record spikes only"
    return None


def _native_connection_kind(connection, shapes: dict, dt: float) -> str | None:
    """Return the native class the builder makes of a connection spec (``Dense``, ``Lateral``, ``OneToOne``), or ``None``."""
    if isinstance(connection, DenseSpec):
        if not connection.exclude_matching:
            return "Dense"
        # ember.builder.excludes_matching_as_lateral; otherwise the builder makes a Sparse connection.
        as_lateral = (
            shapes.get(connection.pre) == shapes.get(connection.post)
            and connection.delay is not None
            and connection.delay.min_ms >= dt
        )
        return "Lateral" if as_lateral else None
    if isinstance(connection, LateralSpec):
        return "Lateral" if connection.neighbourhood == "all" else None
    if isinstance(connection, OneToOneSpec):
        return "OneToOne"
    return None


def _native_rule_problem(rule, connection, kind: str, dt: float) -> str | None:
    """Return why the kernels cannot run a learning rule on a connection of native class ``kind``, or ``None``."""
    if isinstance(rule, WeightNormalizationSpec):
        return None if rule.interval is None else "the kernels run weight normalization between samples only (no interval)"
    if not isinstance(rule, (StdpSpec, DiehlCookStdpSpec)):
        return "the kernels run stdp, diehl_cook_stdp and weight_normalization"
    if kind not in ("Dense", "Lateral"):
        return "the kernels learn on dense and lateral connections"
    if rule.bound not in ("none", "hard", "soft"):
        return f"the kernels take bounds none, hard and soft, not {rule.bound!r}"
    if _times_arrivals(rule, connection):
        if not isinstance(rule, StdpSpec):
            return "the kernels time arrivals through delays for stdp only; use timing 'emission'"
        if not _whole_step_delays(connection, dt):
            return "the kernels time arrivals through whole-step delays only"
        if _arrival_horizon(connection, dt) > 48:
            return "the kernels time arrivals through delays of up to 47 steps"
    return None


def _has_delays(connection) -> bool:
    """Return whether the built connection has delays: a ``delay`` section, or lateral (one step by default)."""
    return connection.delay is not None or isinstance(connection, LateralSpec)


def _times_arrivals(rule, connection) -> bool:
    """Return whether a spike-timing rule keeps per-synapse arrival times (``timing`` arrival on a delayed connection)."""
    return getattr(rule, "timing", None) == "arrival" and _has_delays(connection)


def _whole_step_delays(connection, dt: float) -> bool:
    """Return whether every delay of a connection is a whole number of steps (as ``delay_steps`` computes it)."""
    delay = connection.delay
    if delay is None:
        return True  # a lateral connection's default delay of one step
    if delay.mode == "nearest":
        return True
    if delay.init.lower != delay.init.upper:
        # NOTE: random initial delays are taken as fractional; a draw of only whole steps is possible but unlikely.
        return False
    value = min(max(delay.init.lower, delay.min_ms), delay.effective_max_ms)
    values = [value]
    if isinstance(connection, DenseSpec) and connection.exclude_matching:
        values.append(delay.min_ms)  # the diagonal of the lateral matrix is min_ms
    return all(_is_whole(item / dt) for item in values)


def _is_whole(steps: float) -> bool:
    return abs(steps - round(steps)) <= 1e-6 * max(1.0, abs(steps))


def _arrival_horizon(connection, dt: float) -> int:
    """Return the steps of spike history that an arrival-timing rule keeps (``ArrivalTracker.horizon``)."""
    max_delay = dt if connection.delay is None else connection.delay.effective_max_ms
    return int(math.ceil(max_delay / dt - 1e-6)) + 1


def _native_seconds(spec: JobSpec, run: _PhaseRun) -> float:
    """Return the native model's seconds for one phase: Python work per batch and call, kernel work per step."""
    network = spec.network
    shapes = network.node_shapes()
    sample_steps = run.samples * spec.steps_per_sample if spec.data is not None else run.steps * run.batch

    python = run.batches * (NATIVE_BATCH_S + run.calls_per_batch * NATIVE_CALL_S) + run.samples * NATIVE_SAMPLE_S
    step_cost = NATIVE_STEP_S
    sample_cost = NATIVE_UNIT_S * sum(population.size for population in network.populations.values())
    for input_spec in network.inputs.values():
        if isinstance(input_spec, BackgroundInputSpec) or (isinstance(input_spec, PoissonInputSpec) and input_spec.mode == "bernoulli"):
            sample_cost += NATIVE_UNIT_S * input_spec.size
        else:
            step_cost += FRAME_STEP_S
            unit_cost = EXACT_POISSON_UNIT_S if isinstance(input_spec, PoissonInputSpec) else FRAME_UNIT_S
            sample_cost += unit_cost * input_spec.size

    for connection in network.connections.values():
        pre, post = shapes.get(connection.pre), shapes.get(connection.post)
        if pre is None or post is None or connection.shape_error(pre, post):
            continue
        synapses = connection.synapse_count(pre, post)
        pre_rate = _spikes_per_step(spec, connection.pre)
        event_cost = NATIVE_DELAYED_EVENT_S if _has_delays(connection) else NATIVE_EVENT_S
        sample_cost += event_cost * pre_rate * synapses
        if not run.learning:
            continue
        timing_rules = [rule for rule in connection.learning if isinstance(rule, (StdpSpec, DiehlCookStdpSpec))]
        for rule in timing_rules:
            if _times_arrivals(rule, connection):
                # Per-synapse arrival bookkeeping at every step, or only at arrivals with a nearest trace.
                trace = getattr(rule, "trace", "nearest")
                costs = NATIVE_ARRIVAL_BATCH_SYNAPSE_S if run.batch > 1 else NATIVE_ARRIVAL_SYNAPSE_S
                sample_cost += costs[trace] * synapses
                continue
            # Depression acts at presynaptic spikes and potentiation at postsynaptic ones. Pair STDP with one
            # sample defers potentiation (plan.Plan._may_defer), which costs a second pass per presynaptic spike.
            deferred = (
                isinstance(rule, StdpSpec) and run.batch == 1 and rule.bound == "none" and rule.a_plus > 0
                and len(timing_rules) == 1
            )
            updates = pre_rate * synapses * (2 if deferred else 1)
            if not deferred:
                updates += _spikes_per_step(spec, connection.post) * synapses
            sample_cost += NATIVE_LEARN_EVENT_S * updates
        for rule in connection.learning:
            if isinstance(rule, WeightNormalizationSpec) and rule.on_sample:
                python += run.batches * (NORMALIZE_S + NORMALIZE_SYNAPSE_S * synapses)
    return python + run.steps * step_cost + sample_steps * sample_cost


def _spikes_per_step(spec: JobSpec, node: str) -> float:
    """Return the assumed spikes per unit and step of a node, averaged over presentation and rest.

    Populations fire at :data:`POPULATION_RATE_HZ`. Poisson data inputs fire
    at ``max_rate_hz`` times the data set's mean intensity while a sample is
    presented, and background inputs at ``rate_hz`` throughout. Spike-time
    inputs emit their spikes once per sample. Event inputs fire at the pattern
    data's ``rate_hz``, or once per step for each random dot. Latency and
    rank-order inputs fire once per unit and sample.
    """
    network = spec.network
    step_s = spec.dt / 1000.0
    if node in network.populations:
        return POPULATION_RATE_HZ * step_s
    input_spec = network.inputs[node]
    if isinstance(input_spec, BackgroundInputSpec):
        return input_spec.rate_hz * step_s
    if spec.data is None:
        steps = max(1, int(math.floor((spec.duration_ms or 0.0) / spec.dt + 0.5)))
        if isinstance(input_spec, SpikeTimesInputSpec):
            return len(input_spec.times_ms) / input_spec.size / steps
        return 0.0
    per_sample = spec.steps_per_sample
    presented = int(round(spec.presentation_ms / spec.dt)) / per_sample
    if isinstance(input_spec, PoissonInputSpec):
        intensity = MEAN_INTENSITY.get(spec.data.dataset, DEFAULT_INTENSITY)
        return input_spec.max_rate_hz * intensity * step_s * presented
    if isinstance(input_spec, SpikeTimesInputSpec):
        return len(input_spec.times_ms) / input_spec.size / per_sample
    if isinstance(input_spec, EventsInputSpec):
        trial = getattr(spec.data, "duration_ms", spec.presentation_ms) / spec.dt / per_sample
        rate_hz = getattr(spec.data, "rate_hz", None)
        if rate_hz is not None:
            return rate_hz * step_s * trial
        dots = getattr(spec.data, "num_dots", 0)
        return dots / max(1, input_spec.size) * trial
    return 1.0 / per_sample
