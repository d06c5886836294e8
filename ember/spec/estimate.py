"""Size, memory and run-time estimates of a job, computed from its spec alone.

The memory estimate adds up what the job allocates: parameters (weights,
delays, thresholds), per-sample state (neurons, synapses, spikes in flight,
learning traces), working memory of the delivery and learning steps, the
loaded data and the recording buffers. It is an upper estimate, not a
measurement.

The time estimate is a cost model: each step pays a fixed overhead per
module (Python and kernel launches) plus a cost per synapse and sample.
NOTE: the constants were measured on a 2-core x86 CPU with torch 2.13 for
``cpu``; the ``cuda`` constants are rough guesses. Treat the seconds as the
order of magnitude only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ember.spec.connections import Conv2dSpec
from ember.spec.learning import DelayAdjustedStdpSpec
from ember.spec.monitors import SpikeMonitorSpec, StateMonitorSpec

if TYPE_CHECKING:
    from ember.spec.job import JobSpec

#: Seconds per step per module (node, connection, rule, monitor).
STEP_OVERHEAD_S = {"cpu": 20e-6, "cuda": 60e-6}
#: Seconds per synapse and sample, per step, for delivery and learning.
SYNAPSE_COST_S = {"cpu": 0.5e-9, "cuda": 2.0e-12}
#: Seconds per step per learning rule while training (Python work of the rule's step).
RULE_OVERHEAD_S = {"cpu": 3e-4, "cuda": 5e-4}
#: Seconds per synapse and sample, per step, of a rule that keeps per-synapse
#: arrival times (delay learning, spike-timing rules on delayed connections).
ARRIVAL_RULE_COST_S = {"cpu": 2.0e-7, "cuda": 1.0e-10}
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
        seconds: estimated run time in s on the job's device (``auto`` counts as ``cpu``).
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
    train_batch = spec.batch_size
    eval_batch = spec.effective_eval_batch_size
    batch = max(train_batch, eval_batch)

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
    if spec.data is None:
        steps = int(math.floor((spec.duration_ms or 0.0) / spec.dt + 0.5))
        batched_steps = {train_batch: steps}
    else:
        per_sample = spec.steps_per_sample
        train_steps = math.ceil(phases.get("train", 0) / train_batch) * per_sample
        eval_steps = sum(math.ceil(count / eval_batch) for name, count in phases.items() if name != "train") * per_sample
        steps = train_steps + eval_steps
        batched_steps = {train_batch: train_steps}
        batched_steps[eval_batch] = batched_steps.get(eval_batch, 0) + eval_steps

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

    device = "cuda" if spec.device == "cuda" else "cpu"
    # Nodes, connections with their synapses, rules, monitors and the runner's spike counters.
    modules = 2 * len(shapes) + 2 * len(network.connections) + len(network.monitors) + sum(
        len(c.learning) for c in network.connections.values()
    )
    per_step = modules * STEP_OVERHEAD_S[device]
    seconds = sum(
        count * (per_step + synapse_work * size * SYNAPSE_COST_S[device]) for size, count in batched_steps.items()
    )
    # Rules act only while training, with the training batch size.
    train_steps = 0
    if spec.data is not None and spec.kind in ("train", "train_evaluate"):
        train_steps = math.ceil(phases.get("train", 0) / train_batch) * spec.steps_per_sample
    rules = sum(len(c.learning) for c in network.connections.values())
    seconds += train_steps * (rules * RULE_OVERHEAD_S[device] + arrival_work * train_batch * ARRIVAL_RULE_COST_S[device])
    return Estimate(
        neurons=neurons,
        synapses=synapses,
        samples=samples,
        steps=steps,
        bytes=int(total),
        memory={name: int(value) for name, value in memory.items()},
        seconds=float(seconds),
    )
