"""A network described for the native kernels, and the runs that use the description.

A :class:`Plan` turns a network into the structures of ``kernels.c`` once:
the step order, the connection lists, parameters expanded per unit, decay
factors computed by torch exactly as the PyTorch path computes them, delay
plans, rule settings. At each run it points the structures at the network's
current state tensors, calls the kernels segment by segment, and does the
bookkeeping that ``Network.step`` does per step (the step counter, encoder
counters, monitors).

The plan records what it read in a :class:`Watch`, so that the runner can tell
when it no longer matches the network and must be rebuilt.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections import Counter
from typing import Any

import torch
from torch import nn

from ember.learning.base import BITS_PER_WORD, WORD_MASK

from ember.native.structs import (
    BOUNDS_HARD,
    BOUNDS_NONE,
    BOUNDS_SOFT,
    CONN_DENSE,
    CONN_LATERAL,
    CONN_ONE_TO_ONE,
    NODE_FRAMES,
    NODE_POISSON,
    NODE_POPULATION,
    RULE_DIEHL_COOK,
    RULE_STDP,
    SYN_CHARGE,
    SYN_CONDUCTANCE,
    SYN_DOUBLE_EXPONENTIAL,
    SYN_EXPONENTIAL,
    SYN_VOLTAGE,
    ConnStruct,
    InjectionStruct,
    NetStruct,
    NodeStruct,
    RuleStruct,
)

#: The maximum number of bytes of source spikes computed in Python for one segment.
FRAME_BYTES = 1 << 25
#: The number of delays converted to steps at a time when a run is planned.
DELAY_BLOCK = 1 << 16
#: The minimum size of the spike event buffer of a recorded node, in events.
MIN_EVENT_CAPACITY = 1 << 16
#: Whether pair STDP with one sample may defer its potentiation (see "deferred potentiation" in
#: kernels_step.h): weights then equal the step-by-step ones up to rounding instead of bit for bit.
#: ``EMBER_NATIVE_DEFER=0`` in the environment, read at each run, also switches it off.
DEFER_POTENTIATION = True


def defer_allowed() -> bool:
    """Return whether deferred potentiation is allowed: :data:`DEFER_POTENTIATION` and ``EMBER_NATIVE_DEFER`` not 0."""
    switched_off = os.environ.get("EMBER_NATIVE_DEFER", "1").strip().lower() in ("0", "false", "no", "off")
    return DEFER_POTENTIATION and not switched_off
#: The minimum steps of a run that defers potentiation: each call ends with a pass over every weight,
#: which a run of a few steps (one per callback, for example) would pay at every step.
DEFER_MIN_STEPS = 32


class Unsupported(Exception):
    """A part of the network that the native kernels cannot run; the message names it."""


# --------------------------------------------------------------------------- watching for changes

_VALUE = object()
_MISSING = object()


def _table(owner: Any, name: str) -> dict:
    """Return the dictionary that stores ``owner.name``: a module's parameter, buffer or submodule table, or ``__dict__``."""
    if isinstance(owner, nn.Module):
        tables = owner.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if name in tables[key]:
                return tables[key]
    return owner.__dict__


class Watch:
    """The attributes a plan was built from, to notice when it must be rebuilt.

    Each entry keeps the dictionary the attribute lives in, so :meth:`valid`
    reads it without ``nn.Module.__getattr__``.
    """

    def __init__(self) -> None:
        # (owner, table, name, value, kind, version or default)
        self.items: list[tuple[Any, dict, str, Any, str, Any]] = []

    @staticmethod
    def _read(owner: Any, table: dict, name: str, default: Any) -> Any:
        if name in table:
            return table[name]
        return getattr(owner, name) if default is _MISSING else getattr(owner, name, default)

    def tensor(self, owner: Any, name: str) -> Any:
        """Return ``owner.name`` and remember its identity and, for a tensor, its version counter."""
        table = _table(owner, name)
        value = self._read(owner, table, name, _MISSING)
        version = value._version if isinstance(value, torch.Tensor) else None
        self.items.append((owner, table, name, value, "version", version))
        return value

    def identity(self, owner: Any, name: str) -> Any:
        """Return ``owner.name`` and remember only its identity, because its contents are read at each run."""
        table = _table(owner, name)
        value = self._read(owner, table, name, _MISSING)
        self.items.append((owner, table, name, value, "identity", _MISSING))
        return value

    def value(self, owner: Any, name: str, default: Any = _MISSING) -> Any:
        """Return ``owner.name`` (or ``default`` if it has none) and remember its value."""
        table = _table(owner, name)
        value = self._read(owner, table, name, default)
        self.items.append((owner, table, name, value, "value", default))
        return value

    def valid(self) -> bool:
        """Return whether every watched attribute still has its identity, version or value."""
        for owner, table, name, expected, kind, extra in self.items:
            current = table.get(name, _MISSING)
            if current is _MISSING:
                current = getattr(owner, name, _MISSING if kind != "value" or extra is _MISSING else extra)
            if kind == "value":
                if type(current) is not type(expected) or current != expected:
                    return False
            elif current is not expected:
                return False
            elif kind == "version" and extra is not None and current._version != extra:
                return False
        return True


# --------------------------------------------------------------------------- helpers
def _history_bits(tracker, step: int) -> torch.Tensor:
    """Return the spike history of ``tracker`` as one int64 word per sample and presynaptic unit, ``(batch * pre,)``.

    Bit k is the spike of step ``step - 1 - k``. ``tracker.history`` keeps
    words of :data:`BITS_PER_WORD` bits relative to its last step; older
    spikes that do not fit in 64 bits are dropped.
    """
    history = tracker.history.reshape(tracker.history.shape[0], tracker.words, -1)
    bits = torch.zeros((history.shape[0], history.shape[2]), dtype=torch.int64)
    last = int(tracker.last_step)
    shift = step - 1 - last
    if last >= 0 and shift < 64:
        for word in range(tracker.words):
            bits |= history[:, word] << (BITS_PER_WORD * word)
        bits = bits << shift
    return bits.reshape(-1).contiguous()


def _store_history_bits(tracker, bits: torch.Tensor, last: int) -> None:
    """Write ``bits`` (bit k: the spike of ``last - k``) back into ``tracker.history`` and set its last step."""
    batch = tracker.history.shape[0]
    words = [((bits >> (BITS_PER_WORD * word)) & WORD_MASK).view(batch, -1) for word in range(tracker.words)]
    tracker.history = torch.stack(words, dim=1).view(tracker.history.shape).to(tracker.history.dtype)
    tracker.last_step = torch.full_like(tracker.last_step, last)


def _flat(tensor: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Return ``tensor`` broadcast to ``shape``, as a contiguous flat tensor of ``dtype``."""
    return tensor.detach().to(dtype).expand(shape).contiguous().view(-1)


def _type_name(module: Any) -> str:
    return type(module).__name__


def _supported_classes() -> dict[str, type]:
    """Import the classes the kernels run (here, so that importing this module stays cheap)."""
    from ember.connections import Dense, Lateral, OneToOne
    from ember.encoders.poisson import PoissonEncoder
    from ember.learning.bounds import HardBounds, SoftBounds
    from ember.learning.diehl_cook import DiehlCookSTDP
    from ember.learning.normalization import WeightNormalization
    from ember.learning.stdp import STDP
    from ember.monitors import SpikeCountMonitor, SpikeMonitor
    from ember.neurons import LIF, AdaptiveLIF
    from ember.sources import CurrentInput, EncodedInput, PatternInput, SpikeGenerator
    from ember.synapses import Conductance, Delta, DoubleExponentialCurrent, ExponentialCurrent

    classes = (
        Dense, Lateral, OneToOne, PoissonEncoder, HardBounds, SoftBounds, DiehlCookSTDP, WeightNormalization, STDP,
        SpikeCountMonitor, SpikeMonitor, LIF, AdaptiveLIF, CurrentInput, EncodedInput, PatternInput, SpikeGenerator,
        Conductance, Delta, DoubleExponentialCurrent, ExponentialCurrent,
    )
    return {cls.__name__: cls for cls in classes}


class _StateSlot:
    """A state tensor the kernels write: which module buffer, its expected shape and dtype, and the field that points at it."""

    __slots__ = ("module", "name", "shape", "dtype", "struct", "field")

    def __init__(self, module: nn.Module, name: str, shape: tuple[int, ...], dtype: torch.dtype, struct: Any, field: str) -> None:
        self.module = module
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype
        self.struct = struct
        self.field = field

    def check(self) -> None:
        """Raise :class:`Unsupported` unless the buffer exists with the expected shape and dtype on the CPU."""
        tensor = self.module._buffers.get(self.name)
        if not isinstance(tensor, torch.Tensor):
            raise Unsupported(f"{_type_name(self.module)} has no state tensor {self.name!r}")
        if tensor.shape != self.shape or tensor.dtype != self.dtype or tensor.device.type != "cpu":
            raise Unsupported(
                f"{_type_name(self.module)}.{self.name} has shape {tuple(tensor.shape)}, {tensor.dtype} on {tensor.device}; "
                f"expected {self.shape}, {self.dtype} on the CPU"
            )

    def bind(self) -> None:
        """Replace the buffer by a contiguous copy and point the structure field at the copy.

        The PyTorch path replaces state tensors at every step instead of
        writing into them, so the kernels may write into the copy: no other
        code refers to it.
        """
        fresh = self.module._buffers[self.name].detach().clone(memory_format=torch.contiguous_format)
        self.module._buffers[self.name] = fresh
        setattr(self.struct, self.field, fresh.data_ptr())


# --------------------------------------------------------------------------- the plan


class Plan:
    """A network described for the kernels.

    The structures contain everything that stays fixed between runs (order,
    parameters, delays). :meth:`run` fills in the state tensors at each run.

    Args:
        network: the :class:`ember.network.Network` to describe.
        kernels: the loaded library (``ember.native.runner.Kernels``).
        structure: the network's structure key, kept for the cache.
        watch: where to record what the description reads.

    Raises:
        Unsupported: naming the first part the kernels cannot run.
    """

    def __init__(self, network, kernels, structure: tuple, watch: Watch) -> None:
        self.structure = structure
        self.watch = watch
        self.kernels = kernels
        self.keep: list[torch.Tensor] = []
        self.classes = _supported_classes()
        self.batch = network.batch_size
        self.state: list[_StateSlot] = []

        # A module's anchor tensor is replaced by .to(), so a change of dtype or device brings a new plan.
        for module in network.modules():
            if isinstance(module.__dict__["_buffers"].get("_anchor"), torch.Tensor):
                watch.identity(module, "_anchor")
        if network.step_count.device.type != "cpu":
            raise Unsupported(f"the network is on {network.step_count.device}; the native kernels run on the CPU only")
        rows = network._plan()
        self.dtype = self._network_dtype(network, rows)
        self.node_names = [name for _, name, *_ in rows]
        self.node_index = {name: index for index, name in enumerate(self.node_names)}
        self.conn_names = list(network.connections.keys())
        self.conn_index = {name: index for index, name in enumerate(self.conn_names)}

        self.nodes = (NodeStruct * len(rows))()
        self.conns = (ConnStruct * max(len(self.conn_names), 1))()
        self.poisson: list[tuple[int, Any]] = []
        self.frames: list[tuple[int, Any]] = []
        # Per connection index: its whole delay steps, or for a delay line the offsets that replaced them
        # in place (see _whole_delays), and whether any delay has a fractional part.
        self.whole_delays: dict[int, torch.Tensor] = {}
        self.fractional_delays: set[int] = set()
        # Per rule with arrival timing: the spike history words of the current run, and the newest spike older than them.
        self.arrival_bits: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        injections = self._describe_nodes(network, rows)
        for name, connection in network.connections.items():
            self._describe_connection(name, connection, network.edges[name], self.conns[self.conn_index[name]])
        self._describe_rules(network)
        self._describe_monitors(network)

        self.injections = (InjectionStruct * max(len(injections), 1))(*injections)
        self.net = NetStruct()
        self.net.batch = self.batch
        self.net.n_nodes = len(rows)
        self.net.n_conns = len(self.conn_names)
        self.net.n_rules = len(self.rule_modules)
        self.net.nodes = self.nodes
        self.net.conns = self.conns
        self.net.rules = self.rules
        self.net.injections = self.injections
        self.net.in_list = self._pin(self.in_list)
        self.net.out_list = self._pin(self.out_list)
        library = kernels.library
        self.run_kernel = library.ember_run_f32 if self.dtype == torch.float32 else library.ember_run_f64

    # ----------------------------------------------------------------- building

    def _pin(self, tensor: torch.Tensor) -> int:
        """Keep ``tensor`` alive as long as the plan and return its data pointer."""
        self.keep.append(tensor)
        return tensor.data_ptr()

    def _network_dtype(self, network, rows) -> torch.dtype:
        dtypes = {node.dtype for _, _, node, *_ in rows}
        dtypes |= {connection.weight.dtype for connection in network.connections.values()}
        if len(dtypes) != 1:
            raise Unsupported(f"the network mixes dtypes {sorted(str(d) for d in dtypes)}; the native kernels need one")
        (dtype,) = dtypes
        if dtype not in (torch.float32, torch.float64):
            raise Unsupported(f"the network's dtype is {dtype}; the native kernels run float32 and float64")
        return dtype

    def _check_device(self, what: str, tensor: torch.Tensor) -> None:
        if tensor.device.type != "cpu":
            raise Unsupported(f"{what} is on {tensor.device}; the native kernels run on the CPU only")

    def _parameter(self, owner: Any, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> int:
        tensor = self.watch.tensor(owner, name)
        self._check_device(f"{name} of {_type_name(owner)}", tensor)
        return self._pin(_flat(tensor, shape, dtype or self.dtype))

    def _add_state(self, module: nn.Module, name: str, shape: tuple[int, ...], struct: Any, field: str, dtype: torch.dtype | None = None) -> None:
        self.state.append(_StateSlot(module, name, shape, dtype or self.dtype, struct, field))

    def _describe_nodes(self, network, rows) -> list[InjectionStruct]:
        """Fill the node structures in step order, with their connection lists; return the injected currents."""
        name_of_conn = {id(module): name for name, module in network.connections.items()}
        in_list: list[int] = []
        out_list: list[int] = []
        injections: list[InjectionStruct] = []
        for index, name, node, is_population, incoming, outgoing, currents in rows:
            struct = self.nodes[index]
            struct.size = node.size
            struct.record_stop = -1
            struct.in_first, struct.in_count = len(in_list), len(incoming)
            in_list += [self.conn_index[name_of_conn[id(c)]] for c in incoming]
            struct.out_first, struct.out_count = len(out_list), len(outgoing)
            out_list += [self.conn_index[name_of_conn[id(c)]] for c in outgoing]
            self._add_state(node, "spikes", (self.batch, *node.shape), struct, "spikes")
            if is_population:
                self._describe_population(name, node, struct)
                struct.injection_first, struct.injection_count = len(injections), len(currents)
                injections += [self._describe_injection(network, node, source) for source in currents]
            else:
                self._describe_source(name, node, index, struct)
        self.in_list = torch.tensor(in_list + [0], dtype=torch.int32)
        self.out_list = torch.tensor(out_list + [0], dtype=torch.int32)
        return injections

    def _describe_population(self, name: str, node, struct: NodeStruct) -> None:
        classes = self.classes
        if type(node) not in (classes["LIF"], classes["AdaptiveLIF"]):
            raise Unsupported(f"population {name!r} is a {_type_name(node)}; the native kernels run LIF and AdaptiveLIF")
        shape = node.shape
        struct.kind = NODE_POPULATION
        self._add_state(node, "v", (self.batch, *shape), struct, "v")
        self._add_state(node, "refractory", (self.batch, *shape), struct, "refractory", torch.int32)
        with torch.no_grad():
            struct.v_rest = self._parameter(node, "v_rest", shape)
            struct.v_reset = self._parameter(node, "v_reset", shape)
            struct.v_threshold = self._parameter(node, "v_threshold", shape)
            struct.resistance = self._parameter(node, "resistance", shape)
            struct.refractory_steps = self._parameter(node, "refractory_steps", shape, torch.int32)
            # The expression of lif_step, so the factor is bit for bit the PyTorch path's.
            struct.decay = self._pin(_flat(torch.exp(-node.dt / self.watch.tensor(node, "tau_mem")), shape, self.dtype))
            if type(node) is classes["AdaptiveLIF"]:
                struct.adaptive = 1
                struct.theta_shared = int(self.watch.value(node, "theta_shared"))
                struct.adapt = int(self.watch.value(node, "adapt"))
                struct.theta_plus = self._parameter(node, "theta_plus", shape)
                theta_decay = torch.exp(-node.dt / self.watch.tensor(node, "tau_theta"))
                struct.theta_decay = self._pin(_flat(theta_decay, shape, self.dtype))
                theta_shape = shape if struct.theta_shared else (self.batch, *shape)
                self._add_state(node, "theta", theta_shape, struct, "theta")

    def _describe_injection(self, network, node, source) -> InjectionStruct:
        name = next(n for n, s in network.currents.items() if s is source)
        if type(source) is not self.classes["CurrentInput"] or self.watch.value(source, "function") is not None:
            raise Unsupported(
                f"injected current {name!r} is a {_type_name(source)} with a function of the step; the native "
                "kernels take CurrentInput with a constant amplitude"
            )
        amplitude = self.watch.tensor(source, "amplitude")
        self._check_device(f"injected current {name!r}", amplitude)
        full = amplitude.detach().to(self.dtype).expand(self.batch, *node.shape).contiguous()
        start = self.watch.value(source, "start_step")
        stop = self.watch.value(source, "stop_step")
        return InjectionStruct(self._pin(full), start, -1 if stop is None else stop)

    def _describe_source(self, name: str, node, index: int, struct: NodeStruct) -> None:
        classes = self.classes
        known = (classes["EncodedInput"], classes["SpikeGenerator"], classes["PatternInput"], classes["CurrentInput"])
        if type(node) not in known:
            raise Unsupported(
                f"input {name!r} is a {_type_name(node)}; the native kernels take EncodedInput, SpikeGenerator, "
                "PatternInput and CurrentInput sources"
            )
        poisson = (
            type(node) is classes["EncodedInput"]
            and type(self.watch.identity(node, "encoder")) is classes["PoissonEncoder"]
            and self.watch.value(node.encoder, "mode") == "bernoulli"
            and self.kernels.native_rng
        )
        if poisson:
            struct.kind = NODE_POISSON
            struct.stream = index
            self.poisson.append((index, node))
        else:
            struct.kind = NODE_FRAMES
            self.frames.append((index, node))

    def _describe_connection(self, name: str, connection, edge: tuple[str, str], struct: ConnStruct) -> None:
        classes = self.classes
        kinds = {classes["Dense"]: CONN_DENSE, classes["Lateral"]: CONN_LATERAL, classes["OneToOne"]: CONN_ONE_TO_ONE}
        if type(connection) not in kinds:
            raise Unsupported(
                f"connection {name!r} is a {_type_name(connection)}; the native kernels run Dense, Lateral and OneToOne"
            )
        struct.kind = kinds[type(connection)]
        struct.pre = self.node_index[edge[0]]
        struct.post = self.node_index[edge[1]]
        struct.pre_size = pre_size = math.prod(connection.pre_shape)
        struct.post_size = post_size = math.prod(connection.post_shape)
        struct.slots = self.watch.value(connection, "slots")
        self._add_state(connection, "in_flight", (self.batch, struct.slots, *connection.post_shape), struct, "in_flight")

        weight = self.watch.identity(connection, "weight")
        self._check_device(f"connection {name!r}", weight)
        layout = (post_size,) if struct.kind == CONN_ONE_TO_ONE else (pre_size, post_size)
        if weight.numel() != math.prod(layout) or not weight.is_contiguous():
            raise Unsupported(f"connection {name!r} has a non-contiguous weight of shape {tuple(weight.shape)}")
        struct.weight = self._pin(weight)

        bias = self.watch.identity(connection, "bias")
        if bias is not None:
            if not bias.is_contiguous() or bias.numel() != post_size:
                raise Unsupported(f"connection {name!r} has a bias of shape {tuple(bias.shape)}; expected {connection.post_shape}")
            struct.bias = self._pin(bias)

        delay = self.watch.tensor(connection, "delay")
        if delay is not None:
            self._describe_delays(name, connection, delay, struct)
        self._describe_synapse(name, connection, struct)

    def _describe_delays(self, name: str, connection, delay: torch.Tensor, struct: ConnStruct) -> None:
        for setting in ("delay_mode", "min_delay", "max_delay"):
            self.watch.value(connection, setting)
        whole_steps, fraction = self._delay_steps(connection, delay)
        low, high = int(whole_steps.min()), int(whole_steps.max())
        has_fraction = fraction is not None
        conn = self.conn_index[name]
        if has_fraction:
            self.fractional_delays.add(conn)
        # The kernels wrap a slot index once, and a far share needs one slot more than its whole delay.
        if high + has_fraction >= struct.slots or low < 0:
            raise Unsupported(f"connection {name!r} has delays outside its ring buffer of {struct.slots} slots")
        if struct.kind == CONN_ONE_TO_ONE:
            self.whole_delays[conn] = whole_steps
            struct.delay = self._pin(whole_steps)
        elif low == high and not has_fraction:
            # One delay for every synapse, such as a lateral connection's step. Each row then goes into the
            # ring slot that many steps ahead, without a table of offsets.
            self.whole_delays[conn] = whole_steps[:1].clone()
            struct.shift = low
        else:
            # The kernels' delay lines: synapse (i, j) adds into the cell delay * post_size + j ahead of the current one.
            if (struct.slots + 1) * struct.post_size >= 2**31:
                raise Unsupported(f"connection {name!r} needs {struct.slots} slots of {struct.post_size} neurons; too many for int32 offsets")
            offset = whole_steps.view(struct.pre_size, struct.post_size)
            offset *= struct.post_size
            offset += torch.arange(struct.post_size, dtype=torch.int32)
            struct.offset = self._pin(offset.reshape(-1))
            # The offsets overwrote the whole delays in place; _whole_delays recovers them by division.
            self.whole_delays[conn] = offset
        if has_fraction:
            struct.fraction = self._pin(fraction)
            struct.has_fraction = 1

    def _whole_delays(self, conn: int, shape: torch.Size) -> torch.Tensor:
        """Return the whole delay steps of dense or lateral connection ``conn`` in the weight's ``shape``."""
        stored = self.whole_delays[conn]
        if stored.numel() == 1:
            return stored.expand(shape)
        # The delay-line offsets: delay * post_size + j.
        return torch.div(stored, shape[-1], rounding_mode="floor").view(shape)

    def _delay_steps(self, connection, delay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Convert a connection's delays to flat whole steps (int32) and fractions (``None`` when all are whole).

        The delays go through ``Connection.delay_steps`` (the operations of
        ``Dense._delay_plan`` and ``Connection._emit_events``) a block at a
        time, so that a large connection needs no full-size temporaries.
        """
        delay = delay.detach().reshape(-1)
        whole_steps = torch.empty(delay.numel(), dtype=torch.int32)
        fraction = None
        with torch.no_grad():
            for start in range(0, delay.numel(), DELAY_BLOCK):
                stop = min(start + DELAY_BLOCK, delay.numel())
                steps = connection.delay_steps(delay[start:stop])
                whole = torch.floor(steps)
                whole_steps[start:stop] = whole.to(torch.int32)
                part = steps - whole
                if fraction is None and bool((part != 0).any()):
                    fraction = torch.zeros(delay.numel(), dtype=self.dtype)
                if fraction is not None:
                    fraction[start:stop] = part
        return whole_steps, fraction

    def _describe_synapse(self, name: str, connection, struct: ConnStruct) -> None:
        classes = self.classes
        synapse = self.watch.identity(connection, "synapse")
        kind = type(synapse)
        shape = (struct.post_size,)
        state_shape = (self.batch, *connection.post_shape)
        with torch.no_grad():
            if kind is classes["Delta"]:
                struct.synapse = SYN_VOLTAGE if self.watch.value(synapse, "mode") == "voltage" else SYN_CHARGE
                struct.dt = synapse.dt if synapse.dt is not None else connection.dt
            elif kind in (classes["ExponentialCurrent"], classes["Conductance"]):
                struct.synapse = SYN_EXPONENTIAL if kind is classes["ExponentialCurrent"] else SYN_CONDUCTANCE
                decay = torch.exp(-synapse._step_length() / self.watch.tensor(synapse, "tau_syn"))
                struct.synapse_decay_a = self._pin(_flat(decay, shape, self.dtype))
                if kind is classes["Conductance"]:
                    struct.synapse_parameter = self._parameter(synapse, "e_rev", shape)
                    self._add_state(synapse, "g", state_shape, struct, "synapse_a")
                else:
                    self._add_state(synapse, "current", state_shape, struct, "synapse_a")
            elif kind is classes["DoubleExponentialCurrent"]:
                struct.synapse = SYN_DOUBLE_EXPONENTIAL
                dt = synapse._step_length()
                rise = torch.exp(-dt / self.watch.tensor(synapse, "tau_rise"))
                fall = torch.exp(-dt / self.watch.tensor(synapse, "tau_decay"))
                struct.synapse_decay_a = self._pin(_flat(rise, shape, self.dtype))
                struct.synapse_decay_b = self._pin(_flat(fall, shape, self.dtype))
                struct.synapse_parameter = self._pin(_flat(synapse.peak_factor, shape, self.dtype))
                self._add_state(synapse, "rise_trace", state_shape, struct, "synapse_a")
                self._add_state(synapse, "decay_trace", state_shape, struct, "synapse_b")
            else:
                raise Unsupported(
                    f"connection {name!r} has a {_type_name(synapse)} synapse; the native kernels run Delta, "
                    "ExponentialCurrent, DoubleExponentialCurrent and Conductance"
                )

    def _describe_rules(self, network) -> None:
        classes = self.classes
        described = []
        for name, rule in network.rules.items():
            if not self.watch.value(rule, "enabled", True):
                continue
            kind = type(rule)
            if kind is classes["WeightNormalization"] and self.watch.value(rule, "interval_steps", None) is None:
                continue  # It acts only between samples, in before_sample().
            if kind not in (classes["STDP"], classes["DiehlCookSTDP"]):
                raise Unsupported(
                    f"learning rule {name!r} is a {_type_name(rule)}; the native kernels run STDP, DiehlCookSTDP "
                    "and WeightNormalization without an interval (switch the rule off with network.learning(False) "
                    "or use engine='torch')"
                )
            connection_name = network.rule_targets[name]
            connection = network.connections[connection_name]
            if type(connection) not in (classes["Dense"], classes["Lateral"]):
                raise Unsupported(f"learning rule {name!r} acts on a {_type_name(connection)}; the native kernels learn on Dense and Lateral")
            struct = self._describe_rule(rule, connection_name, connection)
            if self.watch.value(rule, "per_synapse"):
                self._check_arrival_timing(name, rule, connection_name)
                struct.arrival = 1
            described.append((rule, struct))

        self.rules = (RuleStruct * max(len(described), 1))()
        self.rule_modules = [rule for rule, _ in described]
        for k, (rule, struct) in enumerate(described):
            self.rules[k] = struct
            struct = self.rules[k]  # the copy inside the array, which the kernels read
            connection = rule.connection
            if struct.arrival:
                tracker = self.watch.identity(rule, "arrivals")
                layout = (self.batch, *tracker.layout)
                self._add_state(rule, "pre_trace", layout, struct, "pre_trace")
                self._add_state(tracker, "reported", layout, struct, "reported", dtype=torch.int64)
                whole = self._whole_delays(struct.conn, connection.weight.shape)
                struct.delay = self._pin(whole.to(torch.uint8).contiguous())
                # Each row's columns grouped by delay, and where each delay's group starts.
                struct.max_delay = int(whole.max())
                order = torch.argsort(whole, dim=1, stable=True)
                grouped = torch.gather(whole, 1, order).contiguous()
                bounds = torch.arange(struct.max_delay + 2, dtype=torch.int32).expand(whole.shape[0], -1).contiguous()
                struct.bucket_column = self._pin(order.to(torch.int32).contiguous())
                struct.bucket_start = self._pin(torch.searchsorted(grouped, bounds).to(torch.int32).contiguous())
            else:
                self._add_state(rule, "pre_trace", (self.batch, *connection.pre_shape), struct, "pre_trace")
            post_traces = ("post_trace",) if type(rule) is classes["STDP"] else ("post_trace1", "post_trace2")
            for trace, field in zip(post_traces, ("post_trace1", "post_trace2")):
                self._add_state(rule, trace, (self.batch, *connection.post_shape), struct, field)
        self.full_pass_cache: dict[int, tuple[int, int, bool]] = {}
        self.rules_on_connection = Counter(struct.conn for _, struct in described)

    def _check_arrival_timing(self, name: str, rule, connection_name: str) -> None:
        """Raise :class:`Unsupported` unless the kernels can time this rule's presynaptic spikes at their arrival.

        They can for pair STDP with whole-step delays that the spike history of
        a 64-bit word covers (two words of ArrivalTracker).
        """
        reason = None
        tracker = self.watch.identity(rule, "arrivals")
        if type(rule) is not self.classes["STDP"]:
            reason = "the kernels time arrivals for pair STDP only"
        elif self.conn_index[connection_name] in self.fractional_delays:
            reason = "its connection has fractional delays, and the kernels time arrivals through whole-step delays"
        elif tracker is None or tracker.words * BITS_PER_WORD > 64:
            reason = "its delays span more than 48 steps"
        if reason is not None:
            raise Unsupported(
                f"learning rule {name!r} times presynaptic spikes at their arrival through delays, but {reason}; "
                "use timing='emission', engine='torch' or engine='auto'"
            )

    def _describe_rule(self, rule, connection_name: str, connection) -> RuleStruct:
        watch = self.watch
        struct = RuleStruct()
        struct.conn = self.conn_index[connection_name]
        struct.mean = int(watch.value(rule, "reduce") == "mean")
        if type(rule) is self.classes["STDP"]:
            struct.kind = RULE_STDP
            struct.nearest = int(watch.value(rule, "trace") == "nearest")
            struct.decay_pre = rule.decay(watch.value(rule, "tau_plus"))
            struct.decay_post1 = rule.decay(watch.value(rule, "tau_minus"))
            depression, potentiation = -watch.value(rule, "a_minus"), watch.value(rule, "a_plus")
        else:
            struct.kind = RULE_DIEHL_COOK
            struct.nearest = 1
            struct.decay_pre = rule.decay(watch.value(rule, "tau_pre"))
            struct.decay_post1 = rule.decay(watch.value(rule, "tau_post1"))
            struct.decay_post2 = rule.decay(watch.value(rule, "tau_post2"))
            depression, potentiation = -watch.value(rule, "nu_pre"), watch.value(rule, "nu_post")
        # stdp.scaled drops an update whose factor is 0, bounds and all.
        struct.depression_factor, struct.depress = depression, int(depression != 0.0)
        struct.potentiation_factor, struct.potentiate = potentiation, int(potentiation != 0.0)

        bounds = watch.identity(rule, "bounds")
        if bounds is None:
            struct.bounds = BOUNDS_NONE
        elif type(bounds) in (self.classes["HardBounds"], self.classes["SoftBounds"]):
            struct.bounds = BOUNDS_HARD if type(bounds) is self.classes["HardBounds"] else BOUNDS_SOFT
            low, high = watch.value(bounds, "w_min"), watch.value(bounds, "w_max")
            struct.has_bound_min, struct.bound_min = low is not None, 0.0 if low is None else low
            struct.has_bound_max, struct.bound_max = high is not None, 0.0 if high is None else high
        else:
            raise Unsupported(f"a learning rule has {_type_name(bounds)}; the native kernels take HardBounds and SoftBounds")
        low, high = watch.value(connection, "w_min"), watch.value(connection, "w_max")
        struct.has_w_min, struct.w_min = low is not None, 0.0 if low is None else low
        struct.has_w_max, struct.w_max = high is not None, 0.0 if high is None else high
        return struct

    def _describe_monitors(self, network) -> None:
        classes = self.classes
        self.count_monitors: dict[int, list[Any]] = {}
        self.spike_monitors: dict[int, list[Any]] = {}
        for name, monitor in network.monitors.items():
            kind = type(monitor)
            if kind not in (classes["SpikeMonitor"], classes["SpikeCountMonitor"]):
                raise Unsupported(
                    f"monitor {name!r} is a {_type_name(monitor)}; the native kernels record with SpikeMonitor and "
                    "SpikeCountMonitor"
                )
            owner = self.watch.identity(monitor, "owner_ref")
            index = self.node_index.get(monitor.target)
            if index is None or not owner or owner[0] is not network.nodes[monitor.target]:
                raise Unsupported(f"monitor {name!r} is not bound to a node of this network")
            group = self.spike_monitors if kind is classes["SpikeMonitor"] else self.count_monitors
            group.setdefault(index, []).append(monitor)

        self.events: dict[int, torch.Tensor] = {}
        for index in self.spike_monitors:
            capacity = max(MIN_EVENT_CAPACITY, 4 * self.batch * self.nodes[index].size)
            self.events[index] = torch.zeros((3, capacity), dtype=torch.int64)
            self.nodes[index].event_capacity = capacity

    # ------------------------------------------------------------- state check

    def check_state(self, network) -> None:
        """Raise :class:`Unsupported` unless every state tensor and input is as the kernels expect; change nothing."""
        if network.step_count.device.type != "cpu":
            raise Unsupported(f"the network is on {network.step_count.device}; the native kernels run on the CPU only")
        for slot in self.state:
            slot.check()
        for index, node in self.poisson:
            if node.data is None or node.data.shape[0] != node.batch_size:
                raise Unsupported(f"input {self.node_names[index]!r} has no data for batch size {node.batch_size}")
        for monitors in list(self.count_monitors.values()) + list(self.spike_monitors.values()):
            for monitor in monitors:
                for buffer in monitor._buffers.values():
                    if isinstance(buffer, torch.Tensor) and buffer.device.type != "cpu":
                        raise Unsupported(f"a monitor of {monitor.target!r} is on {buffer.device}; the native kernels record on the CPU")

    # ---------------------------------------------------------------- running

    def run(self, network, steps: int) -> None:
        """Advance ``network`` by ``steps`` steps; :meth:`check_state` must have passed."""
        if steps <= 0:
            return
        for slot in self.state:
            slot.bind()
        for k, rule in enumerate(self.rule_modules):
            struct = self.rules[k]
            struct.full_pass = int(self._needs_full_pass(k, rule))
            struct.defer = int(steps >= DEFER_MIN_STEPS and self._may_defer(struct))
            if struct.arrival:
                bits = _history_bits(rule.arrivals, int(network.step_count))
                older = torch.full_like(bits, -1)
                self.arrival_bits[k] = (bits, older)
                struct.bits, struct.older = bits.data_ptr(), older.data_ptr()
        self._bind_inputs(network)
        counts = {}
        for index in self.count_monitors:
            counts[index] = torch.zeros(self.batch * self.nodes[index].size, dtype=torch.int32)
            self.nodes[index].counts = counts[index].data_ptr()
        for index, monitors in self.spike_monitors.items():
            self._set_record_window(index, monitors)

        frame_size = sum(self.batch * self.nodes[index].size for index, _ in self.frames)
        segment = steps if frame_size == 0 else max(1, min(steps, FRAME_BYTES // frame_size))
        first = int(network.step_count)
        done = 0
        while done < steps:
            count = min(segment, steps - done)
            self._run_segment(first + done, count)
            done += count
        self._finish(network, steps, counts)

    def _finish(self, network, steps: int, counts: dict[int, torch.Tensor]) -> None:
        """Do the bookkeeping that the PyTorch path does at every step, once for all ``steps``."""
        network._buffers["step_count"] = network.step_count + steps
        for _, node in self.poisson:
            encoder = node.encoder
            encoder._buffers["elapsed"] = encoder.elapsed + steps
        for index, monitors in self.count_monitors.items():
            node = network.nodes[self.node_names[index]]
            added = counts[index].view(self.batch, *node.shape).to(node.spikes.dtype)
            for monitor in monitors:
                monitor._buffers["counts"] = monitor.counts + added
            self.nodes[index].counts = None
        last = int(network.step_count) - 1
        for k, rule in enumerate(self.rule_modules):
            # The kernels leave full_pass set exactly when an update left a weight outside the bounds.
            weight = rule.connection.weight
            self.full_pass_cache[k] = (id(weight), weight._version, bool(self.rules[k].full_pass))
            if self.rules[k].arrival:
                _store_history_bits(rule.arrivals, self.arrival_bits.pop(k)[0], last)

    def _may_defer(self, struct: RuleStruct) -> bool:
        """Return whether the kernels may defer the potentiation of this rule in the next run.

        Deferring sums the potentiation of many steps before one clamp, which
        equals the step-by-step update only for pair STDP with one sample, no
        Bounds, a positive ``a_plus``, every weight in bounds, and no other rule
        on the same connection.
        """
        return (
            defer_allowed()
            and not struct.arrival
            and self.batch == 1
            and struct.kind == RULE_STDP
            and struct.bounds == BOUNDS_NONE
            and bool(struct.potentiate)
            and struct.potentiation_factor > 0.0
            and not struct.full_pass
            and self.rules_on_connection[struct.conn] == 1
        )

    def _needs_full_pass(self, k: int, rule) -> bool:
        """Return whether some weight lies outside the bounds that an update applies.

        The PyTorch path clamps every weight at every update, but the kernels
        touch only the rows and columns of spikes. Both give the same weights
        while every weight is in bounds, so otherwise the first update goes
        over all weights.

        NOTE: the result is cached by the weight's version counter, which
        in-place operations on the parameter advance but writes through
        ``weight.data`` do not. After writing weights outside the bounds
        through ``.data``, call ``ember.native.runner.forget(network)``.
        """
        connection = rule.connection
        weight = connection.weight.detach()
        cached = self.full_pass_cache.get(k)
        if cached is not None and cached[0] == id(connection.weight) and cached[1] == weight._version:
            return cached[2]
        lows = [connection.w_min]
        highs = [connection.w_max]
        if rule.bounds is not None:
            lows.append(rule.bounds.w_min)
            highs.append(rule.bounds.w_max)
        outside = any(low is not None and bool((weight < low).any()) for low in lows)
        outside = outside or any(high is not None and bool((weight > high).any()) for high in highs)
        if type(connection) is self.classes["Lateral"]:
            outside = outside or bool((torch.diagonal(weight) != 0).any())
        self.full_pass_cache[k] = (id(connection.weight), weight._version, outside)
        return outside

    def _bind_inputs(self, network) -> None:
        """Set the seed and the spike probabilities of each Poisson source, as ``Network.step`` and ``EncodedInput.step`` would."""
        from ember.random import mix_seed

        seed = mix_seed(network.seed, int(network.sample_key))
        self.source_seed = seed
        self.probabilities: list[torch.Tensor] = []
        for index, node in self.poisson:
            encoder = node.encoder
            prepared = encoder._prepare_cached(encoder._check_input(node.data))
            probability = prepared.clamp(max=1.0).to(self.dtype).contiguous()
            self.probabilities.append(probability)
            self.nodes[index].probability = probability.data_ptr()
            self.nodes[index].seed = seed
            node.seed = seed
            node.stream = index

    def _set_record_window(self, index: int, monitors: list) -> None:
        starts = [monitor.start_step for monitor in monitors]
        stops = [monitor.stop_step for monitor in monitors]
        struct = self.nodes[index]
        struct.record_start = min(starts)
        struct.record_stop = -1 if any(stop is None for stop in stops) else max(stops)
        events = self.events[index]
        struct.event_step = events[0].data_ptr()
        struct.event_index = events[1].data_ptr()
        struct.event_sample = events[2].data_ptr()
        struct.event_count = 0

    def _run_segment(self, first: int, count: int) -> None:
        """Run ``count`` steps from step ``first``, calling the kernels again whenever they stop to have events drained."""
        frames = self._compute_frames(first, count)
        done = 0
        while done < count:
            for index, frame in frames.items():
                self.nodes[index].frames = frame[done:].data_ptr()
            self.net.step0 = first + done
            self.net.steps = count - done
            result = self.run_kernel(ctypes.byref(self.net))
            if result < 0:
                raise MemoryError("the native kernels could not allocate their working memory")
            done += result
            self._drain_events()

    def _compute_frames(self, first: int, count: int) -> dict[int, torch.Tensor]:
        """Step every source without native draws in Python for the segment, as ``Network.step`` would, and keep its spikes."""
        frames = {}
        for index, node in self.frames:
            frame = torch.empty((count, self.batch, node.size), dtype=torch.uint8)
            for offset in range(count):
                node.seed = self.source_seed
                node.stream = index
                spikes = node.step(first + offset)
                frame[offset] = spikes.detach().reshape(self.batch, node.size) != 0
            frames[index] = frame
            # step() replaced the spikes tensor: give the kernels a fresh one to write.
            fresh = torch.zeros((self.batch, *node.shape), dtype=self.dtype)
            node._buffers["spikes"] = fresh
            self.nodes[index].spikes = fresh.data_ptr()
        return frames

    def _drain_events(self) -> None:
        for index, monitors in self.spike_monitors.items():
            struct = self.nodes[index]
            filled = struct.event_count
            if filled == 0:
                continue
            events = self.events[index][:, :filled]
            for monitor in monitors:
                _feed_spike_monitor(monitor, events)
            struct.event_count = 0


def _feed_spike_monitor(monitor, events: torch.Tensor) -> None:
    """Store events ``(3, n)`` of (step, index, sample) into ``monitor`` as its ``record`` would, step by step."""
    steps = events[0]
    keep = steps >= monitor.start_step
    if monitor.stop_step is not None:
        keep &= steps < monitor.stop_step
    if not bool(keep.all()):
        events = events[:, keep]
    count = events.shape[1]
    offset = 0
    while offset < count:
        filled = int(monitor.filled)
        take = min(count - offset, monitor.chunk_size - filled)
        monitor.events[:, filled:filled + take] = events[:, offset:offset + take]
        monitor.filled += take
        offset += take
        if int(monitor.filled) == monitor.chunk_size:
            monitor.flush()
