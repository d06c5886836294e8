"""The base classes of learning rules and the synapse-level helpers they share.

A learning rule is written once for every connection type. It never indexes a
connection's ``weight`` or ``delay`` itself; it goes through the connection's
learning view (see :class:`~ember.connections.base.Connection`):

- ``outer(pre, post, reduce)``: the sum over the batch (and over the positions
  that share a weight) of ``pre[b, i] * post[b, j]`` for every synapse
  ``i -> j``, in the weight's shape;
- ``synaptic(pre)``, ``postsynaptic(post)`` and ``per_synapse(param)``: a
  presynaptic, postsynaptic or weight-shaped quantity expanded to the
  *synapse layout*, a shape that broadcasts to one entry per synapse (for a
  convolution, per synapse and output position);
- ``fold(update, reduce)``: a synapse-layout update summed back to the
  weight's shape;
- ``apply_update(name, delta)``: add ``delta`` to the weights or delays and
  apply the connection's bounds.

The functions below build what rules need on top of those methods. They
give the synapse layout's shape, tell which layout entries are real
synapses, and convert sums and averages between postsynaptic neurons and
weights. :class:`ArrivalTracker` times the arrival of presynaptic spikes at
each synapse through its delay.

Every rule keeps its traces and timers as registered state
(:meth:`ember.core.Stateful.register_state`), so ``state_dict()`` saves them,
``.to()`` moves them and ``reset_state()`` clears them. A rule acts only while
its ``enabled`` attribute is true; :meth:`ember.network.Network.learning`
switches rules per connection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch

from ember.connections.base import Connection
from ember.core import Node, Stateful, broadcast_shapes

Reduce = Literal["sum", "mean"]
Timing = Literal["arrival", "emission"]

#: The emission step stored for a synapse that has not yet received a spike.
NEVER = -1

#: Spike bits per history word, because float32 represents every integer below 2**24 exactly.
BITS_PER_WORD = 24
WORD_MASK = (1 << BITS_PER_WORD) - 1


# --------------------------------------------------------------------------- argument checks


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming the argument."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_finite(name: str, value: float, unit: str = "") -> float:
    """Return ``value`` as a float, or raise ValueError if it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number{_unit(unit)}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite{_unit(unit)}, got {value!r}")
    return number


def check_positive(name: str, value: float, unit: str = "") -> float:
    """Return ``value`` as a float, or raise ValueError if it is not a finite number above 0."""
    number = check_finite(name, value, unit)
    if number <= 0.0:
        raise ValueError(f"{name} must be above 0{_unit(unit)}, got {value!r}")
    return number


def check_non_negative(name: str, value: float, unit: str = "") -> float:
    """Return ``value`` as a float, or raise ValueError if it is negative or not finite."""
    number = check_finite(name, value, unit)
    if number < 0.0:
        raise ValueError(f"{name} must be at least 0{_unit(unit)}, got {value!r}")
    return number


def _unit(unit: str) -> str:
    return f" (in {unit})" if unit else ""


# --------------------------------------------------------------------------- synapse-layout helpers


def synapse_layout(connection: Connection) -> tuple[int, ...]:
    """Return the shape of the synapse layout of ``connection``, without the batch dimension.

    It is the broadcast of the presynaptic, postsynaptic and per-synapse
    expansions: ``(pre_size, post_size)`` for dense and lateral connections,
    ``shape`` for one-to-one, ``(n,)`` for sparse, and
    ``(maps, channels * kernel_height * kernel_width, positions)`` for conv2d.
    """
    pre = connection.synaptic(_zeros(connection, 1, connection.pre_shape))
    post = connection.postsynaptic(_zeros(connection, 1, connection.post_shape))
    weight = connection.per_synapse(connection.weight.detach())
    return broadcast_shapes(pre.shape, post.shape, weight.shape)[1:]


def synapse_mask(connection: Connection) -> torch.Tensor:
    """Return 1.0 where an entry of the synapse layout is a real synapse, shape ``(1, *layout)``.

    Entries that read zero padding (conv2d borders) are 0.0. The diagonal of
    a lateral connection is 1.0 here; ``fold`` removes it.
    """
    ones = connection.synaptic(torch.ones(1, *connection.pre_shape, dtype=connection.dtype, device=connection.device))
    return ones.expand(1, *synapse_layout(connection)).clone()


def existing_weights(connection: Connection) -> torch.Tensor:
    """Return a boolean tensor in the weight's shape, true for weights that belong to a synapse.

    False entries are weights that no synapse uses, such as the diagonal of
    a lateral connection.
    """
    ones_pre = torch.ones(1, *connection.pre_shape, dtype=connection.dtype, device=connection.device)
    ones_post = torch.ones(1, *connection.post_shape, dtype=connection.dtype, device=connection.device)
    return connection.outer(ones_pre, ones_post, "sum") > 0


def postsynaptic_sum(connection: Connection, values: torch.Tensor) -> torch.Tensor:
    """Sum a synapse-layout tensor over the synapses onto each postsynaptic neuron.

    This is the adjoint of ``connection.postsynaptic``, computed by autograd
    through that method, so it holds for every connection type.

    Args:
        connection: the connection whose layout ``values`` is in.
        values: a tensor that broadcasts to ``(b, *layout)``.

    Returns:
        Shape ``(b, *post_shape)``: for each sample and postsynaptic neuron,
        the sum of ``values`` over its incoming synapses.
    """
    batch = values.shape[0]
    probe = torch.zeros(batch, *connection.post_shape, dtype=values.dtype, device=values.device, requires_grad=True)
    with torch.enable_grad():
        total = (connection.postsynaptic(probe) * values).sum()
        (gradient,) = torch.autograd.grad(total, probe)
    return gradient


def incoming_sum(connection: Connection, parameter: torch.Tensor) -> torch.Tensor:
    """Return the sum of a weight-shaped parameter over the incoming synapses of each postsynaptic neuron.

    For conv2d, every output position of a map gets the sum over the whole
    kernel of that map, padding or not.

    Returns:
        Shape ``post_shape``.
    """
    return postsynaptic_sum(connection, connection.per_synapse(parameter))[0]


def average_to_weights(connection: Connection, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average a per-postsynaptic-neuron quantity over the synapses that share each weight.

    A weight of a dense, lateral, one-to-one or sparse connection belongs to
    one postsynaptic neuron and receives that neuron's value. A conv2d kernel
    weight is shared by every output position of its map and receives the
    mean over those positions (and over the batch).

    Args:
        connection: the connection.
        values: shape ``(b, *post_shape)``.
        mask: the synapse mask (:func:`synapse_mask`), computed if not given.

    Returns:
        The weight's shape; 0 for weights that no synapse uses.
    """
    mask = synapse_mask(connection) if mask is None else mask
    total = connection.fold(connection.postsynaptic(values) * mask, "sum")
    count = connection.fold(connection.postsynaptic(torch.ones_like(values)) * mask, "sum")
    return torch.where(count > 0, total / count.clamp(min=1e-30), torch.zeros_like(total))


def _zeros(connection: Connection, batch: int, shape: Sequence[int]) -> torch.Tensor:
    return torch.zeros(batch, *shape, dtype=connection.dtype, device=connection.device)


# --------------------------------------------------------------------------- arrivals through delays


class ArrivalTracker(Stateful):
    """Presynaptic spikes as they arrive at each synapse through the connection's delays.

    A spike emitted at step ``e`` reaches synapse ``s`` at the exact time
    ``e + d_s`` (in steps), with ``d_s`` the synapse's current delay in
    (fractional) steps. The tracker reports it at the step in which the
    connection starts to deliver it: a delay ``k + f`` (``0 < f < 1``)
    delivers ``1 - f`` of the weight at step ``e + k`` and ``f`` at step
    ``e + k + 1``, so the spike is reported at step ``e + k``, the floor of
    its arrival time. A postsynaptic spike in that step may be caused by the
    first share, so rules pair it with the input as causal. Together with
    each spike the tracker returns its *lateness* ``t - (e + d_s)`` in steps,
    so rules can use its exact arrival time; at the reporting step the
    lateness lies in ``(-1, 0]``, negative while the last share is still to
    come. Each arrival is reported once: the tracker remembers, per synapse,
    the emission step of the last spike it reported.

    The spikes of each presynaptic neuron over the last ``horizon`` steps are
    kept as bits, bit ``k`` of the history being the spike of ``k`` steps
    ago, in words of :data:`BITS_PER_WORD` bits. A word is expanded to the
    synapse layout with ``connection.synaptic`` as a float32 tensor, which
    represents such integers exactly. Finding the newest due spike of every
    synapse therefore costs a few elementwise operations per word, not one
    pass over the layout per step of delay.

    NOTE: arrival times use the delays at the time of arrival, while the
    connection delivers with the delay at emission. The two differ only for
    spikes in flight while a rule changes delays. If a delay shrinks by more
    than one step while several spikes of one synapse are in flight, only the
    newest of the spikes that became due in the same step is reported.

    Args:
        connection: the connection with delays.
        batch_size: the number of samples.
        dtype: the floating point dtype of the returned tensors.
        device: where the state lives.

    Attributes:
        history: the spike bits of each presynaptic neuron, int64, shape
            ``(batch, words, *pre_shape)``.
        last_step: the step of the last call, ``-1`` before the first, a 0-d
            int64 tensor.
        reported: the emission step of the last spike reported at each
            synapse, ``-1`` for none, shape ``(batch, *layout)``.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        batch_size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, dtype=dtype, device=device)
        if connection.delay is None:
            raise ValueError("ArrivalTracker needs a connection with delays (delay= in ms)")
        self._connection = (connection,)
        self.horizon = int(math.ceil(connection.max_delay / connection.dt - 1e-6)) + 1
        self.words = -(-self.horizon // BITS_PER_WORD)
        self.layout = synapse_layout(connection)
        self.register_state("history", (self.words, *connection.pre_shape), 0, dtype=torch.long)
        self.register_state("last_step", (), NEVER, dtype=torch.long, batched=False)
        self.register_state("reported", self.layout, NEVER, dtype=torch.long)

    @property
    def connection(self) -> Connection:
        return self._connection[0]

    def _record(self, step: int, spikes: torch.Tensor) -> None:
        """Shift the spike bits by the steps since the last call and store this step's spikes as bit 0."""
        last = int(self.last_step)
        elapsed = step - last if 0 <= last < step else self.horizon + BITS_PER_WORD * self.words
        history = self.history
        if elapsed >= BITS_PER_WORD * self.words:
            history = torch.zeros_like(history)
        elif elapsed > 0:
            whole, part = divmod(elapsed, BITS_PER_WORD)
            moved = torch.zeros_like(history)
            moved[:, whole:] = history[:, : self.words - whole]
            carried = torch.zeros_like(moved)
            carried[:, 1:] = moved[:, :-1] >> (BITS_PER_WORD - part)
            history = ((moved << part) & WORD_MASK) | carried
        history[:, 0] |= (spikes > 0).to(torch.long)
        self.history = history
        self.last_step = torch.full_like(self.last_step, step)

    def arrivals(self, step: int, spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Record the presynaptic spikes of ``step`` and return the spikes that arrive at it.

        Args:
            step: the step index; calls must come in increasing order until
                the state is reset.
            spikes: the presynaptic spikes of this step, ``(batch, *pre_shape)``.

        Returns:
            ``(arrived, lateness)``, both of shape ``(batch, *layout)``.
            ``arrived`` is 1.0 where the connection starts to deliver a
            spike at ``step`` (its exact arrival time is after ``step - 1``
            and before ``step + 1``), else 0.0. ``lateness`` is ``step``
            minus the exact arrival time in steps, in ``(-1, 0]`` unless a
            delay shrank while the spike was in flight, and 0 where nothing
            arrived. It is ``None`` when every delay is a whole number of
            steps, because then every lateness is 0.
        """
        self._record(step, spikes.detach())
        connection = self.connection
        delay = connection.per_synapse(connection.delay_steps().detach().to(self.dtype))
        # ``delay_steps`` snaps near-whole delays, so this is the first step the connection delivers to.
        first_due = torch.floor(delay).to(torch.long)
        # Ages below ``unreported`` belong to spikes emitted after the last reported one.
        unreported = step - self.reported
        shape = (self.batch_size, *self.layout)
        found = torch.zeros(shape, dtype=torch.bool, device=self.device)
        age = torch.zeros(shape, dtype=torch.long, device=self.device)

        for word in range(self.words):
            base = word * BITS_PER_WORD
            if int(first_due.min()) >= base + BITS_PER_WORD:
                continue
            packed = self.history[:, word]
            if not bool(packed.any()):
                continue
            bits = connection.synaptic(packed.to(torch.float32)).to(torch.long)
            low = (first_due - base).clamp(0, BITS_PER_WORD)
            high = (unreported - base).clamp(0, BITS_PER_WORD)
            window = torch.where(high > low, (1 << high) - (1 << low), torch.zeros_like(high))
            due = bits & window
            newest = due & -due
            hit = (newest != 0) & ~found
            position = torch.log2(newest.clamp(min=1).to(torch.float32)).round().to(torch.long)
            age = torch.where(hit, base + position, age)
            found = found | hit

        self.reported = torch.where(found, step - age, self.reported)
        if bool((first_due == delay).all()):
            # Whole-step delays: every spike arrives exactly on a step.
            return found.to(self.dtype), None
        lateness = torch.where(found, age.to(self.dtype) - delay, torch.zeros((), dtype=self.dtype, device=self.device))
        return found.to(self.dtype), lateness


# --------------------------------------------------------------------------- base classes


class LearningRule(Stateful):
    """Base class of learning rules: binding to a connection, switching and batch reduction.

    A rule is bound to one connection and its two nodes by
    :meth:`ember.network.Network.add_rule`, which calls :meth:`bind`. After
    all nodes of step ``t`` have spiked, the network calls :meth:`step` for
    every enabled rule. Subclasses declare their state in :meth:`allocate`
    and implement :meth:`update`.

    Args:
        reduce: how per-sample updates combine over the batch: ``"mean"``
            (default; the update does not grow with the batch size) or
            ``"sum"``.
        dtype: the floating point dtype of the rule's state; the
            connection's dtype once bound.
        device: where the state lives; the connection's device once bound.

    Attributes:
        enabled: whether :meth:`step` changes anything. Switch it per rule,
            or per connection with ``network.learning(False, connections=[...])``.
        reduce: the batch reduction.
    """

    def __init__(
        self,
        *,
        reduce: Reduce = "mean",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype=dtype, device=device)
        self.reduce: Reduce = check_choice("reduce", reduce, get_args(Reduce))  # type: ignore[assignment]
        self.enabled = True
        self._bound: tuple[Connection, Node, Node] | None = None

    # ------------------------------------------------------------- binding

    def bind(self, connection: Connection, pre: Node, post: Node) -> None:
        """Attach the rule to ``connection`` from node ``pre`` to node ``post`` and allocate its state.

        Raises:
            ValueError: if the rule is already bound, if the nodes do not
                match the connection's shapes, or if the rule cannot act on
                this connection (see each rule).
        """
        if self._bound is not None:
            raise ValueError(f"{type(self).__name__} is already bound to a connection; create one rule per connection")
        if not isinstance(connection, Connection):
            raise ValueError(f"{type(self).__name__} must be bound to an ember Connection, got {type(connection).__name__}")
        for role, node, shape in (("pre", pre, connection.pre_shape), ("post", post, connection.post_shape)):
            if tuple(node.shape) != tuple(shape):
                raise ValueError(f"{role} node shape {tuple(node.shape)} does not match the connection's {role}_shape {tuple(shape)}")
        self.check_connection(connection, post)
        self._bound = (connection, pre, post)
        self.to(device=connection.device, dtype=connection.dtype)
        self.batch_size = connection.batch_size
        self.allocate()

    def check_connection(self, connection: Connection, post: Node) -> None:
        """Raise ValueError if this rule cannot act on ``connection``; the default accepts all."""

    def allocate(self) -> None:
        """Declare the rule's state once the connection is known; the default declares none."""

    @property
    def is_bound(self) -> bool:
        """Whether :meth:`bind` has been called."""
        return self._bound is not None

    def _require_bound(self) -> tuple[Connection, Node, Node]:
        if self._bound is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to a connection; add it with network.add_rule(name, rule, connection) "
                "or call bind(connection, pre, post)"
            )
        return self._bound

    @property
    def connection(self) -> Connection:
        """The connection the rule changes."""
        return self._require_bound()[0]

    @property
    def pre(self) -> Node:
        """The presynaptic node."""
        return self._require_bound()[1]

    @property
    def post(self) -> Node:
        """The postsynaptic node."""
        return self._require_bound()[2]

    @property
    def dt(self) -> float:
        """The step length in ms."""
        return self.connection.dt

    # ------------------------------------------------------------- running

    def step(self, step: int) -> None:
        """Apply the rule for step ``step``, after every node has spiked; do nothing while disabled."""
        self._require_bound()
        if not self.enabled:
            return
        with torch.no_grad():
            self.update(step)

    def update(self, step: int) -> None:
        """Update traces and parameters for step ``step`` (subclasses implement it)."""
        raise NotImplementedError

    def before_sample(self) -> None:
        """Act at the start of a sample, after ``reset_state()``; the default does nothing.

        Rules that act between samples (weight normalisation) override it.
        The runner calls it for every enabled rule before each sample.
        """

    def spikes_of(self, node: Node) -> torch.Tensor:
        """Return the current spikes of ``node``, detached, in the rule's dtype."""
        return node.spikes.detach().to(self.dtype)

    def decay(self, tau: float) -> float:
        """Return the factor ``exp(-dt / tau)`` by which a trace with time constant ``tau`` (ms) decays per step."""
        return math.exp(-self.dt / tau)

    def extra_repr(self) -> str:
        return "" if self.reduce == "mean" else f"reduce={self.reduce!r}"


class SpikeTimingRule(LearningRule):
    """Base class of rules driven by the timing of presynaptic and postsynaptic spikes.

    Presynaptic spikes count when they reach the synapse. With
    ``timing="arrival"`` (the default) on a connection with delays, each
    synapse receives the spike at the emission step plus its own delay, through an
    :class:`ArrivalTracker`, and the rule keeps its presynaptic traces per
    synapse in the synapse layout. With ``timing="emission"``, or on a
    connection without delays, presynaptic traces are kept per presynaptic
    neuron, which is cheaper and exact when there are no delays.

    NOTE: arrival timing costs a few dozen elementwise passes over
    ``batch x synapses`` per step. For a 784 x 100 dense connection with
    delays and batch 16, Diehl and Cook's rule measured about 50 ms of CPU
    time per step on one x86 core (torch 2.13), against under 1 ms with
    ``timing="emission"``. Choose emission timing for large delayed
    connections on CPU when exact arrival times do not matter.

    Within one step, events are handled in this order. First presynaptic
    events read the postsynaptic traces of earlier steps (depression). Then
    the presynaptic traces take in this step's spikes, postsynaptic events
    read those traces (potentiation), and the postsynaptic traces take in
    this step's spikes. A pair whose two spikes fall in the same step therefore
    counts as causal (post after pre). With a fractional delay a spike falls
    in the step in which the connection starts to deliver it, so a
    postsynaptic spike caused by its first share pairs with it as causal with
    ``Δt = 0`` (see :meth:`causal_read`). The depression update is applied
    before the potentiation update, each followed by the bounds.

    Args:
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"``, see above.
        bounds: weight dependence applied to every weight update (see
            :mod:`ember.learning.bounds`); ``None`` leaves only the
            connection's hard bounds ``w_min``/``w_max``.
        dtype: the dtype of the rule's state.
        device: where the state lives.
    """

    def __init__(
        self,
        *,
        reduce: Reduce = "mean",
        timing: Timing = "arrival",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, dtype=dtype, device=device)
        self.timing: Timing = check_choice("timing", timing, get_args(Timing))  # type: ignore[assignment]
        if bounds is not None and not callable(getattr(bounds, "limit", None)):
            raise ValueError(f"bounds must be an ember.learning.bounds object (HardBounds, SoftBounds, ...), got {bounds!r}")
        self.bounds = bounds
        self.per_synapse = False
        self.arrivals: ArrivalTracker | None = None

    def bind(self, connection: Connection, pre: Node, post: Node) -> None:
        if self.bounds is not None:
            self.bounds = self.bounds.resolve(connection)
        self.per_synapse = self.timing == "arrival" and connection.delay is not None
        super().bind(connection, pre, post)

    def allocate(self) -> None:
        connection = self.connection
        self.layout = synapse_layout(connection)
        self.register_buffer("mask", synapse_mask(connection), persistent=False)
        if self.per_synapse:
            self.arrivals = ArrivalTracker(connection, batch_size=self.batch_size, dtype=self.dtype, device=self.device)
        self.allocate_traces()

    def allocate_traces(self) -> None:
        """Declare the rule's traces; subclasses implement it."""

    @property
    def pre_trace_shape(self) -> tuple[int, ...]:
        """The shape of presynaptic traces without the batch: the synapse layout, or the presynaptic shape."""
        return self.layout if self.per_synapse else tuple(self.connection.pre_shape)

    def presynaptic_events(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the presynaptic spikes that reach the synapses at ``step`` and their lateness in steps.

        Returns:
            ``(events, lateness)``. Per synapse (``(batch, *layout)``) with
            arrival timing on a delayed connection, else the presynaptic
            spikes ``(batch, *pre_shape)``. ``lateness`` is ``None`` when
            every event falls exactly on this step.
        """
        spikes = self.spikes_of(self.pre)
        if self.arrivals is None:
            return spikes, None
        return self.arrivals.arrivals(step, spikes)

    def event_values(self, events: torch.Tensor, lateness: torch.Tensor | None, tau: float) -> torch.Tensor:
        """Return the trace increment of each event, ``exp(-lateness * dt / tau)`` (1.0 for an on-time event)."""
        if lateness is None:
            return events
        return events * torch.exp(-lateness * (self.dt / tau))

    def causal_read(self, trace: torch.Tensor, increments: torch.Tensor, lateness: torch.Tensor | None) -> torch.Tensor:
        """Return a presynaptic trace, this step's events included, as a postsynaptic spike of this step reads it.

        An event reported at this step with negative lateness (a fractional
        delay whose delivery started at this step) adds more than 1.0 to
        the trace, its exact value at later steps. A postsynaptic spike of
        this step pairs with it as causal with ``Δt = max(t_post - t_arrival, 0)``,
        so its contribution is capped at 1.0 here.

        Args:
            trace: the trace after this step's events.
            increments: what this step's events added (:meth:`event_values`).
            lateness: the events' lateness in steps, or ``None``.
        """
        if lateness is None:
            return trace
        return trace - (increments - increments.clamp(max=1.0))

    def readout(self, events: torch.Tensor, lateness: torch.Tensor | None, tau: float) -> torch.Tensor:
        """Return the factor ``exp(+lateness * dt / tau)`` per event.

        It turns a postsynaptic trace (time constant ``tau``, ms) read at
        this step into its value at each event's exact arrival time, given
        that no postsynaptic spike of this step has been added yet.
        """
        if lateness is None:
            return events
        return events * torch.exp(lateness * (self.dt / tau))

    def pair(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor | None:
        """Return ``sum_b pre[b, i] * post[b, j]`` per weight, reduced over the batch; ``None`` if all zero.

        Args:
            pre: a presynaptic quantity, ``(batch, *pre_trace_shape)``.
            post: a postsynaptic quantity, ``(batch, *post_shape)``.
        """
        if not bool(post.any()) or not bool(pre.any()):
            return None
        connection = self.connection
        if self.per_synapse:
            return connection.fold(pre * connection.postsynaptic(post) * self.mask, self.reduce)
        return connection.outer(pre, post, self.reduce)

    def update_weights(self, delta: torch.Tensor | None) -> None:
        """Apply a weight update through the rule's bounds and the connection's hard bounds."""
        if delta is None:
            return
        if self.bounds is not None:
            delta = self.bounds.limit(self.connection.weight.detach(), delta)
        self.connection.apply_update("weight", delta)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()] if super().extra_repr() else []
        if self.timing != "arrival":
            parts.append(f"timing={self.timing!r}")
        if self.bounds is not None:
            parts.append(f"bounds={self.bounds!r}")
        return ", ".join(parts)


def add_events(trace: torch.Tensor, increments: torch.Tensor, events: torch.Tensor, mode: str) -> torch.Tensor:
    """Return a trace after this step's events: ``all_to_all`` adds the increments, ``nearest`` sets the trace to them.

    Args:
        trace: the decayed trace.
        increments: the value each event brings (1.0, or less for a late arrival).
        events: 1.0 where an event happened, else 0.0.
        mode: ``"all_to_all"`` or ``"nearest"``.
    """
    if mode == "all_to_all":
        return trace + increments
    return torch.where(events > 0, increments, trace)
