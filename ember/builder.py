"""Build an :class:`ember.network.Network` from a :class:`ember.spec.NetworkSpec`.

The builder turns every spec into its module: populations into
:mod:`ember.neurons` classes, inputs into :mod:`ember.sources` nodes,
connections into :mod:`ember.connections` classes with their synapses and
initial weights and delays, learning rules into :mod:`ember.learning` rules
and monitors into :mod:`ember.monitors` monitors.

Random initial values (weights, delays, sparse connectivity) are drawn from a
CPU generator seeded by the job seed and the connection's name, so the same
spec builds the same network on every device and in every process.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ember.connections import Conv2d, Dense, Lateral, OneToOne, Sparse
from ember.connections.base import Connection
from ember.network import Network
from ember.random import mix_seed
from ember.spec.connections import (
    ConnectionSpec,
    Conv2dSpec,
    DenseSpec,
    LateralSpec,
    OneToOneSpec,
    SparseSpec,
)
from ember.spec.inputs import (
    BackgroundInputSpec,
    EventsInputSpec,
    InputSpec,
    LatencyInputSpec,
    PoissonInputSpec,
    RankOrderInputSpec,
    SpikeTimesInputSpec,
)
from ember.spec.job import JobSpec
from ember.spec.monitors import SpikeMonitorSpec, StateMonitorSpec
from ember.spec.network import NetworkSpec
from ember.spec.synapses import (
    ConductanceSynapseSpec,
    DeltaSynapseSpec,
    DoubleExponentialSynapseSpec,
    ExponentialSynapseSpec,
    SynapseSpec,
)

#: Stream numbers that keep the random draws of the builder apart.
_WEIGHT_STREAM = 1
_DELAY_STREAM = 2
_TOPOLOGY_STREAM = 3

#: Prefix of the monitors the runner adds for itself (user names start with a letter).
INTERNAL_PREFIX = "_"

Shape = tuple[int, ...]


class BuildError(ValueError):
    """A spec that passed validation but cannot be built (for example, data of the wrong shape)."""


def resolve_device(device: str) -> torch.device:
    """Return the torch device for a spec's ``device`` (``auto``: CUDA when available).

    Raises:
        BuildError: if ``cuda`` is requested and no CUDA device is available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BuildError("the job asks for device 'cuda', but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(device)


def name_seed(seed: int, stream: int, name: str) -> int:
    """Return a seed for the draws of one named part, stable across processes."""
    return mix_seed(seed, stream, zlib.crc32(name.encode("utf-8")))


def _generator(seed: int, stream: int, name: str) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(name_seed(seed, stream, name))


@dataclass
class BuiltNetwork:
    """A network built from a spec, with what the runner needs to drive it.

    Attributes:
        network: the network.
        spec: the network spec it was built from.
        inputs: the input specs by node name.
        spike_monitors: names of the spike monitors from the spec.
        state_monitors: names of the state monitors from the spec.
        count_monitors: the internal spike-count monitor of each population
            and input, by node name.
        rule_connections: the connection of each learning rule, by rule name.
    """

    network: Network
    spec: NetworkSpec
    inputs: dict[str, InputSpec]
    spike_monitors: list[str] = field(default_factory=list)
    state_monitors: list[str] = field(default_factory=list)
    count_monitors: dict[str, str] = field(default_factory=dict)
    rule_connections: dict[str, str] = field(default_factory=dict)

    @property
    def data_inputs(self) -> dict[str, InputSpec]:
        """The inputs that present the data sample."""
        return {name: spec for name, spec in self.inputs.items() if spec.data_driven}


def build_network(
    job: JobSpec,
    *,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    spike_sink: Any = None,
) -> BuiltNetwork:
    """Build the network of a job.

    Args:
        job: the validated job spec; its ``network``, ``dt``, ``seed`` and ``dtype`` are used.
        batch_size: samples side by side; default ``job.batch_size``.
        device: where the network lives.
        spike_sink: a callable ``sink(monitor_name, chunk)`` that receives the
            records of the spike monitors; ``None`` keeps them in the monitors.

    Returns:
        The built network and its bookkeeping.

    Raises:
        BuildError: if a part cannot be built; the message names the part.
    """
    spec = job.network
    dtype = torch.float64 if job.dtype == "float64" else torch.float32
    batch = job.batch_size if batch_size is None else int(batch_size)
    device = torch.device(device)
    network = Network(dt=job.dt, batch_size=batch, seed=job.seed)
    options = {"dtype": dtype, "device": device}

    for name, input_spec in spec.inputs.items():
        network.add(name, _make_input(input_spec, job.dt, batch, options))
    for name, population in spec.populations.items():
        network.add(name, _make_population(name, population, job.dt, batch, options))

    shapes = spec.node_shapes()
    rule_connections: dict[str, str] = {}
    for name, connection_spec in spec.connections.items():
        connection = make_connection(
            name, connection_spec, shapes[connection_spec.pre], shapes[connection_spec.post], job, batch, options
        )
        _wrap(f"connection {name!r}", network.connect, name, connection_spec.pre, connection_spec.post, connection)
        for index, rule_spec in enumerate(connection_spec.learning):
            rule_name = f"{name}_{rule_spec.type}_{index}"
            rule = _wrap(f"rule {rule_name!r}", make_rule, rule_spec, connection, job.dt, options)
            _wrap(f"rule {rule_name!r}", network.add_rule, rule_name, rule, name)
            rule_connections[rule_name] = name

    built = BuiltNetwork(network=network, spec=spec, inputs=dict(spec.inputs), rule_connections=rule_connections)
    _add_monitors(built, spike_sink)
    return built


def _wrap(what: str, function, *args, **kwargs):
    """Call ``function`` and re-raise its ``ValueError`` as a :class:`BuildError` naming ``what``."""
    try:
        return function(*args, **kwargs)
    except BuildError:
        raise
    except ValueError as error:
        raise BuildError(f"{what}: {error}") from error


def _make_population(name: str, population, dt: float, batch: int, options: dict[str, Any]):
    import ember.neurons as neurons

    neuron_class = getattr(neurons, type(population).neuron_class)
    arguments = population.constructor_arguments()
    return _wrap(f"population {name!r}", neuron_class, tuple(population.shape), dt=dt, batch_size=batch, **arguments, **options)


def _make_input(spec: InputSpec, dt: float, batch: int, options: dict[str, Any]):
    from ember.encoders import LatencyEncoder, PoissonEncoder, RankOrderEncoder
    from ember.sources import EncodedInput, PatternInput, SpikeGenerator

    shape = tuple(spec.shape)
    if isinstance(spec, PoissonInputSpec):
        encoder = PoissonEncoder(dt=dt, mode=spec.mode, saturation="clip")
    elif isinstance(spec, BackgroundInputSpec):
        encoder = PoissonEncoder(dt=dt, saturation="clip")
    elif isinstance(spec, LatencyInputSpec):
        encoder = LatencyEncoder(dt=dt, window_ms=spec.window_ms, mapping=spec.mapping, log_floor=spec.log_floor)
    elif isinstance(spec, RankOrderInputSpec):
        encoder = RankOrderEncoder(dt=dt, interval_ms=spec.interval_ms, ties=spec.ties)
    elif isinstance(spec, EventsInputSpec):
        return PatternInput(shape, dt, batch_size=batch, after_end="silent", **options)
    elif isinstance(spec, SpikeTimesInputSpec):
        return SpikeGenerator(shape, spec.times_ms, spec.indices, dt, batch_size=batch, rounding="nearest", **options)
    else:  # pragma: no cover - the spec union is closed
        raise BuildError(f"unknown input type {spec.type!r}")
    return EncodedInput(shape, encoder, dt, batch_size=batch, **options)


def make_synapse(spec: SynapseSpec, dt: float, options: dict[str, Any]):
    """Return the synapse module of a synapse spec."""
    from ember.synapses import Conductance, Delta, DoubleExponentialCurrent, ExponentialCurrent

    if isinstance(spec, DeltaSynapseSpec):
        return Delta(mode=spec.mode, dt=dt, **options)
    if isinstance(spec, ExponentialSynapseSpec):
        return ExponentialCurrent(spec.tau_syn, dt=dt, **options)
    if isinstance(spec, DoubleExponentialSynapseSpec):
        return DoubleExponentialCurrent(spec.tau_rise, spec.tau_decay, dt=dt, **options)
    if isinstance(spec, ConductanceSynapseSpec):
        return Conductance(spec.tau_syn, spec.e_rev, dt=dt, **options)
    raise BuildError(f"unknown synapse type {spec.type!r}")  # pragma: no cover - the spec union is closed


def same_position_pairs(shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (pre, post) flat indices that link each map to every other map at the same position.

    Args:
        shape: ``(maps, *positions)``.

    Returns:
        int64 ``pre_index`` and ``post_index``, each of length ``size * (maps - 1)``.
    """
    maps = shape[0]
    positions = math.prod(shape[1:])
    pre_map, post_map = torch.meshgrid(torch.arange(maps), torch.arange(maps), indexing="ij")
    keep = pre_map != post_map
    pre_map, post_map = pre_map[keep], post_map[keep]
    position = torch.arange(positions)
    pre_index = (pre_map[:, None] * positions + position[None, :]).reshape(-1)
    post_index = (post_map[:, None] * positions + position[None, :]).reshape(-1)
    return pre_index, post_index


def all_but_matching_pairs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (pre, post) indices of every pair ``i -> j`` with ``i != j``, for ``size`` units."""
    pre, post = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    keep = pre != post
    return pre[keep], post[keep]


def excludes_matching_as_lateral(spec: ConnectionSpec, pre: Shape, post: Shape, dt: float) -> bool:
    """Return whether a dense connection with ``exclude_matching`` is built as a :class:`Lateral`.

    A :class:`Lateral` holds the same synapses as the per-synapse (sparse)
    form, ``i -> j`` for ``i != j``, as a matrix whose diagonal stays 0, and
    the native kernels run it. It delivers after at least one step, so it is
    used when pre and post have the same shape and every delay is at least
    ``dt``; otherwise the connection is a :class:`Sparse`. Either way the
    stored weights (:func:`parameter_tensors`) have the per-synapse shape
    ``(size * (size - 1),)`` in the order of :func:`all_but_matching_pairs`.

    Args:
        spec: the connection spec.
        pre: the presynaptic shape.
        post: the postsynaptic shape.
        dt: the step length in ms.
    """
    return (
        isinstance(spec, DenseSpec)
        and spec.exclude_matching
        and tuple(pre) == tuple(post)
        and spec.delay is not None
        and spec.delay.min_ms >= dt
    )


def off_diagonal_matrix(values: torch.Tensor, diagonal: float) -> torch.Tensor:
    """Lay per-synapse values in the order of :func:`all_but_matching_pairs` out as a square matrix.

    Args:
        values: ``(size * (size - 1),)`` values of the pairs ``i -> j``, ``i != j``.
        diagonal: the value put on the diagonal.

    Returns:
        ``(size, size)``, ``matrix[i, j]`` the value of pair ``i -> j``.
    """
    size = math.isqrt(values.numel()) + 1
    matrix = torch.full((size, size), float(diagonal), dtype=values.dtype, device=values.device)
    matrix[~torch.eye(size, dtype=torch.bool, device=values.device)] = values
    return matrix


def off_diagonal_values(matrix: torch.Tensor) -> torch.Tensor:
    """Return the off-diagonal entries of a square matrix in the order of :func:`all_but_matching_pairs`."""
    size = matrix.shape[0]
    return matrix[~torch.eye(size, dtype=torch.bool, device=matrix.device)]


def _matrix_delays(arguments: dict[str, Any]) -> dict[str, Any]:
    """Return the connection arguments with a per-synapse delay laid out as a matrix (diagonal at the minimum)."""
    delay = arguments.get("delay")
    if isinstance(delay, torch.Tensor) and delay.dim() == 1:
        arguments = dict(arguments, delay=off_diagonal_matrix(delay, arguments["min_delay"]))
    return arguments


def _sparse_pairs(spec: SparseSpec, name: str, pre: Shape, post: Shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the pairs of a sparse connection: each pair independently with ``probability``."""
    generator = _generator(seed, _TOPOLOGY_STREAM, name)
    pre_size, post_size = math.prod(pre), math.prod(post)
    pre_index, post_index = [], []
    # Draw row by row so the memory stays at one row of pairs.
    for row in range(pre_size):
        chosen = (torch.rand(post_size, generator=generator) < spec.probability).nonzero().reshape(-1)
        if spec.pre == spec.post and not spec.autapses:
            chosen = chosen[chosen != row]
        pre_index.append(torch.full_like(chosen, row))
        post_index.append(chosen)
    return torch.cat(pre_index), torch.cat(post_index)


def make_connection(
    name: str,
    spec: ConnectionSpec,
    pre: Shape,
    post: Shape,
    job: JobSpec,
    batch: int,
    options: dict[str, Any],
) -> Connection:
    """Build one connection with its synapse, initial weights and delays.

    Raises:
        BuildError: if the connection module rejects the arguments.
    """
    dtype = options["dtype"]
    pairs = None
    if isinstance(spec, DenseSpec) and spec.exclude_matching:
        pairs = all_but_matching_pairs(math.prod(post))
    elif isinstance(spec, LateralSpec) and spec.neighbourhood == "same_position":
        pairs = same_position_pairs(post)
    elif isinstance(spec, SparseSpec):
        pairs = _sparse_pairs(spec, name, pre, post, job.seed)
    weight_shape = (pairs[0].numel(),) if pairs is not None else spec.weight_shape(pre, post)

    weight = spec.weight.sample(weight_shape, _generator(job.seed, _WEIGHT_STREAM, name), dtype)
    arguments: dict[str, Any] = {
        "dt": job.dt,
        "synapse": make_synapse(spec.synapse, job.dt, options),
        "bias": spec.bias,
        "w_min": spec.w_min,
        "w_max": spec.w_max,
        "batch_size": batch,
        **options,
    }
    if spec.delay is not None:
        delay = spec.delay.init.sample(weight_shape, _generator(job.seed, _DELAY_STREAM, name), dtype)
        maximum = spec.delay.effective_max_ms
        arguments.update(
            delay=delay.clamp(spec.delay.min_ms, maximum),
            max_delay=maximum,
            min_delay=spec.delay.min_ms,
            learn_delay=spec.delay.trainable,
            delay_mode=spec.delay.mode,
        )
    elif isinstance(spec, LateralSpec):
        arguments.update(delay=job.dt, min_delay=job.dt)

    what = f"connection {name!r}"
    if isinstance(spec, DenseSpec) and pairs is not None:
        if excludes_matching_as_lateral(spec, pre, post, job.dt):
            # The same synapses as the sparse form, held as a matrix with an empty diagonal.
            return _wrap(what, Lateral, post, off_diagonal_matrix(weight, 0.0), **_matrix_delays(arguments))
        return _wrap(what, Sparse, pre, post, pairs[0], pairs[1], weight, **arguments)
    if isinstance(spec, DenseSpec):
        return _wrap(what, Dense, pre, post, weight, **arguments)
    if isinstance(spec, OneToOneSpec):
        return _wrap(what, OneToOne, post, weight, **arguments)
    if isinstance(spec, LateralSpec):
        if pairs is None:
            return _wrap(what, Lateral, post, weight, **arguments)
        return _wrap(what, Sparse, post, post, pairs[0], pairs[1], weight, **arguments)
    if isinstance(spec, Conv2dSpec):
        return _wrap(
            what,
            Conv2d,
            pre,
            weight,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            **arguments,
        )
    if isinstance(spec, SparseSpec):
        return _wrap(what, Sparse, pre, post, pairs[0], pairs[1], weight, **arguments)
    raise BuildError(f"unknown connection type {spec.type!r}")  # pragma: no cover - the spec union is closed


def _add_monitors(built: BuiltNetwork, spike_sink: Any) -> None:
    from ember.monitors import SpikeCountMonitor, SpikeMonitor, StateMonitor

    network = built.network
    for name, spec in built.spec.monitors.items():
        if isinstance(spec, SpikeMonitorSpec):
            sink = None if spike_sink is None else _bound_sink(spike_sink, name)
            _wrap(f"monitor {name!r}", network.add_monitor, name, SpikeMonitor(spec.target, sink=sink))
            built.spike_monitors.append(name)
        elif isinstance(spec, StateMonitorSpec):
            monitor = StateMonitor(spec.target, spec.variable, every=spec.every, capacity=spec.capacity)
            _wrap(f"monitor {name!r}", network.add_monitor, name, monitor)
            built.state_monitors.append(name)
    for node in list(built.spec.populations) + list(built.spec.inputs):
        monitor_name = f"{INTERNAL_PREFIX}count_{node}"
        network.add_monitor(monitor_name, SpikeCountMonitor(node))
        built.count_monitors[node] = monitor_name


def _bound_sink(sink, monitor: str):
    def forward(chunk) -> None:
        sink(monitor, chunk)

    return forward


# --------------------------------------------------------------------- weights


def parameter_tensors(built: BuiltNetwork) -> dict[str, torch.Tensor]:
    """Return the learned tensors under their result names.

    Names: ``CONNECTION.weight``, ``CONNECTION.delay`` (ms, when the
    connection has delays) and ``POPULATION.threshold`` (mV, the effective
    threshold, for populations whose threshold is one value per neuron).
    """
    tensors: dict[str, torch.Tensor] = {}
    network = built.network
    for name, connection in network.connections.items():
        per_synapse = _held_as_matrix(built, name)
        for attribute in ("weight", "delay"):
            value = getattr(connection, attribute)
            if value is None:
                continue
            value = value.detach()
            tensors[f"{name}.{attribute}"] = off_diagonal_values(value) if per_synapse else value.clone()
    for name in built.spec.populations:
        population = network.nodes[name]
        threshold = population.threshold.detach()
        if tuple(threshold.shape) == tuple(population.shape):
            tensors[f"{name}.threshold"] = threshold.clone()
    return tensors


def _held_as_matrix(built: BuiltNetwork, name: str) -> bool:
    """Return whether connection ``name`` holds per-synapse (``exclude_matching``) values as a square matrix."""
    spec = built.spec.connections.get(name)
    return isinstance(spec, DenseSpec) and spec.exclude_matching and isinstance(built.network.connections[name], Lateral)


@torch.no_grad()
def load_parameters(built: BuiltNetwork, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Copy learned tensors (as written by :func:`parameter_tensors`) into the network.

    A population threshold sets ``theta`` of an adaptive LIF population
    (``threshold - v_threshold``) or ``v_threshold`` of a LIF population.

    Returns:
        The names that were loaded.

    Raises:
        BuildError: for an unknown name or a tensor of the wrong shape.
    """
    from ember.neurons import LIF, AdaptiveLIF

    network = built.network
    loaded = []
    for key, tensor in tensors.items():
        owner, _, attribute = key.rpartition(".")
        if owner in network.connections and attribute in ("weight", "delay"):
            target = getattr(network.connections[owner], attribute)
            if target is None:
                raise BuildError(f"parameter {key!r}: connection {owner!r} has no {attribute}")
            per_synapse = _held_as_matrix(built, owner)
            stored_shape = (target.shape[0] * (target.shape[0] - 1),) if per_synapse else tuple(target.shape)
            if tuple(stored_shape) != tuple(tensor.shape):
                raise BuildError(
                    f"parameter {key!r} has shape {tuple(tensor.shape)}, but the network's has shape "
                    f"{tuple(stored_shape)}; the parameters come from another network"
                )
            if per_synapse:
                keep = ~torch.eye(target.shape[0], dtype=torch.bool, device=target.device)
                target[keep] = tensor.to(target.device, target.dtype)
            else:
                target.copy_(tensor.to(target.device, target.dtype))
            network.connections[owner].apply_bounds()
        elif owner in built.spec.populations and attribute == "threshold":
            population = network.nodes[owner]
            if tuple(tensor.shape) != tuple(population.shape):
                raise BuildError(f"parameter {key!r} must have the population shape {population.shape}")
            value = tensor.to(population.device, population.dtype)
            if isinstance(population, AdaptiveLIF) and population.theta_shared:
                population.theta = value - population.v_threshold.expand(population.shape)
            elif isinstance(population, LIF) and not isinstance(population, AdaptiveLIF):
                population.v_threshold = value.clone()
            else:
                raise BuildError(f"parameter {key!r}: thresholds of {type(population).__name__} cannot be set")
        else:
            raise BuildError(f"parameter {key!r} names no connection weight or delay and no population threshold")
        loaded.append(key)
    return loaded


def make_rule(spec, connection: Connection, dt: float, options: dict[str, Any]):
    """Return the learning rule module of a rule spec.

    Args:
        spec: the rule spec; its ``rule_class`` names the :mod:`ember.learning` class.
        connection: the connection the rule will be bound to (for bounds).
        dt: the step length in ms.
        options: ``dtype`` and ``device``.

    Raises:
        BuildError: if :mod:`ember.learning` lacks the rule class.
    """
    import importlib

    learning = importlib.import_module("ember.learning")
    rule_class = getattr(learning, spec.rule_class, None)
    if rule_class is None:
        raise BuildError(f"learning rule {spec.type!r} needs ember.learning.{spec.rule_class}, which does not exist")
    arguments = spec.rule_arguments()
    bound = getattr(spec, "bound", "none")
    if bound != "none":
        from ember.learning import bounds

        if bound == "hard":
            arguments["bounds"] = bounds.HardBounds()
        elif bound == "soft":
            arguments["bounds"] = bounds.SoftBounds()
        else:
            arguments["bounds"] = bounds.PowerBounds(exponent=spec.exponent)
    return rule_class(**arguments, **options)
