"""The connection base class: weights, per-synapse delays and spike delivery.

A connection maps the spikes of a presynaptic node onto the input of a
postsynaptic population. Spikes in flight wait in a ring buffer of future
input, one slot per step, of shape ``(batch, slots, *post_shape)``. A spike
emitted at step ``t`` through a synapse with a delay of ``d`` steps is added
to slot ``(t + d) mod slots`` when it is emitted, and the postsynaptic side
reads and clears slot ``t mod slots`` at step ``t``. The delay is therefore
fixed when the spike is emitted, and every spike is delivered exactly once.

A fractional delay ``d = k + f`` (``0 <= f < 1``) splits the delivered weight
between steps ``t + k`` (weight ``1 - f``) and ``t + k + 1`` (weight ``f``).
This linear split is differentiable with respect to the delay.

Two delivery paths give the same result within float tolerance:

* the event path: each presynaptic unit that spiked adds its row of weights,
  at its own delays, into the ring buffer. The work is active inputs x fan-out
  and no ``batch x inputs x outputs`` tensor is built. Connections with a
  row structure (dense, lateral, one-to-one, sparse) use it when autograd is
  off.
* the slot path: for each delay slot ``k`` the connection's linear map is
  applied once with the weights that land in that slot. It costs one linear
  map per slot and supports autograd through weights, delays and spikes; it
  is used under autograd and by connections without rows (conv2d).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from ember.core import Shape, Stateful, as_shape, broadcast_shapes
from ember.units import check_dt, to_fractional_steps

Reduce = Literal["sum", "mean"]
DelayMode = Literal["linear", "nearest"]
_REDUCTIONS = ("sum", "mean")


def check_reduce(reduce: str) -> str:
    """Validate a batch reduction name."""
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    return reduce


def reduce_batch(update: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce a per-sample update over its leading batch dimension by sum or mean."""
    check_reduce(reduce)
    return update.sum(0) if reduce == "sum" else update.mean(0)


def _shares_memory(tensor: torch.Tensor, source: object) -> bool:
    """Return whether ``tensor`` may use the memory of ``source``, a tensor or an array-like object."""
    if isinstance(source, torch.Tensor):
        return tensor.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
    interface = getattr(source, "__array_interface__", None)
    if interface is None:
        return False
    # A NumPy array that torch.as_tensor took without conversion.
    start = interface["data"][0]
    return tensor.device.type == "cpu" and start <= tensor.data_ptr() < start + max(getattr(source, "nbytes", 0), 1)


class Connection(Stateful):
    """Weighted connection from a presynaptic node to a postsynaptic population.

    Subclasses set the weight layout and the linear map. This class owns the
    delay handling, the ring buffer of spikes in flight, bias, bounds and the
    common learning view.

    Args:
        pre_shape: the shape of the presynaptic node, without batch.
        post_shape: the shape of the postsynaptic population, without batch.
        weight: the initial weight tensor, in the layout of the subclass. Its
            unit is the synapse's input unit (mV for a voltage delta synapse,
            nA for current synapses, µS for conductance synapses).
        dt: the step length in ms.
        synapse: the synapse model that filters the arriving input on the
            postsynaptic side. ``None`` means a voltage delta synapse.
        delay: per-synapse delays in ms, a number or a tensor broadcastable to
            the weight's shape, or ``None`` for no delay (the target sees the
            spike in the same step).
        max_delay: the largest delay in ms that the ring buffer holds. Delays
            are clamped to ``[min_delay, max_delay]``. Default: the initial
            maximum delay.
        min_delay: the smallest allowed delay in ms, 0 by default. Connections
            that close a cycle need at least one step.
        learn_delay: whether the delay tensor is a trainable ``Parameter``
            (autograd); plasticity rules can change delays either way.
        delay_mode: ``"linear"`` splits a fractional delay between the two
            neighbouring steps; ``"nearest"`` rounds it to the nearest step.
        bias: an input added to the arriving input at every step, in the
            synapse's input unit; ``None`` for no bias.
        w_min: the lower hard bound on weights, applied after every update.
        w_max: the upper hard bound on weights, applied after every update.
        copy: with ``True`` (default) the connection keeps its own copy of
            ``weight``. With ``False`` a tensor of the connection's dtype and
            device becomes the weight itself, so a large matrix needs its
            memory once. Changes to either tensor then show in the other, and
            a lateral connection zeroes the caller's diagonal. A weight of
            another dtype or device is converted and so never shared.
        batch_size: the number of samples simulated side by side.

    Attributes:
        weight: the weight ``Parameter``.
        delay: the delay tensor in ms (a ``Parameter`` when ``learn_delay``),
            or ``None``.
        in_flight: the ring buffer of future input, shape
            ``(batch, slots, *post_shape)``.
    """

    #: Whether this connection type can deliver spikes row by row.
    has_rows: bool = False

    def __init__(
        self,
        pre_shape: int | Sequence[int],
        post_shape: int | Sequence[int],
        weight: torch.Tensor,
        *,
        dt: float,
        synapse: nn.Module | None = None,
        delay: float | torch.Tensor | None = None,
        max_delay: float | None = None,
        min_delay: float = 0.0,
        learn_delay: bool = False,
        delay_mode: DelayMode = "linear",
        bias: float | torch.Tensor | None = None,
        w_min: float | None = None,
        w_max: float | None = None,
        copy: bool = True,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, dtype=dtype, device=device)
        self.pre_shape: Shape = as_shape(pre_shape, name="pre_shape")
        self.post_shape: Shape = as_shape(post_shape, name="post_shape")
        self.dt = check_dt(dt)
        if delay_mode not in ("linear", "nearest"):
            raise ValueError(f"delay_mode must be 'linear' or 'nearest', got {delay_mode!r}")
        self.delay_mode = delay_mode
        if w_min is not None and w_max is not None and w_min > w_max:
            raise ValueError(f"w_min ({w_min}) must not exceed w_max ({w_max})")
        self.w_min = w_min
        self.w_max = w_max

        source = weight
        weight = torch.as_tensor(weight, dtype=self.dtype, device=self.device)
        if copy and _shares_memory(weight, source):
            # A converted weight is already a new tensor, so only an unconverted one is copied.
            weight = weight.clone()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(
            torch.as_tensor(bias, dtype=self.dtype, device=self.device).expand(self.post_shape).clone()
        )
        self._init_delay(delay, max_delay, min_delay, learn_delay)

        if synapse is None:
            from ember.synapses import Delta

            synapse = Delta(dt=self.dt, dtype=self.dtype, device=self.device)
        self.synapse = synapse
        if hasattr(synapse, "bind"):
            synapse.bind(self.post_shape, self.batch_size, dt=self.dt)
        self.register_state("in_flight", (self.slots, *self.post_shape), 0.0)
        self.apply_bounds()

    # ----------------------------------------------------------------- delays

    def _init_delay(self, delay, max_delay, min_delay, learn_delay) -> None:
        if min_delay < 0 or not math.isfinite(min_delay):
            raise ValueError(f"min_delay must be a finite value of at least 0 ms, got {min_delay!r}")
        self.min_delay = float(min_delay)
        if delay is None:
            if learn_delay:
                raise ValueError("learn_delay=True needs initial delays: pass delay= in ms")
            self.delay = None
            self.max_delay = 0.0 if max_delay is None else float(max_delay)
        else:
            delay = torch.as_tensor(delay, dtype=self.dtype, device=self.device)
            self._check_delay_shape(delay)
            # The extremes propagate NaN, so these checks need no temporary of the weight's size.
            low, high = (float(value) for value in torch.aminmax(delay.detach().reshape(-1)))
            if not (low >= 0.0 and math.isfinite(high)):
                raise ValueError(f"delays must be finite and at least 0 ms, got values in [{low:g}, {high:g}] ms")
            delay = delay.expand(self.weight.shape).clone()
            self.max_delay = high if max_delay is None else float(max_delay)
            if high > self.max_delay + 1e-9:
                raise ValueError(f"delays up to {high:g} ms exceed max_delay = {self.max_delay:g} ms; raise max_delay")
            self.delay = nn.Parameter(delay, requires_grad=bool(learn_delay))
        if self.max_delay < self.min_delay:
            raise ValueError(f"max_delay ({self.max_delay} ms) is below min_delay ({self.min_delay} ms)")
        # One spare slot takes the far half of a fractional delay at max_delay.
        self.slots = int(math.floor(self.max_delay / self.dt + 1e-6)) + (2 if self.delay is not None else 1)

    def _check_delay_shape(self, delay: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``delay`` broadcasts to the weight's shape without growing it."""
        weight_shape = tuple(self.weight.shape)
        try:
            fits = broadcast_shapes(delay.shape, self.weight.shape) == weight_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"delay must be a number or a tensor of the weight's shape {weight_shape} "
                f"(or broadcastable to it), one delay in ms per synapse, got shape {tuple(delay.shape)}"
            )

    @property
    def min_delay_steps(self) -> float:
        """The smallest delay this connection can deliver with, in steps (for cycle checks)."""
        if self.delay is None:
            return 0.0
        return self.min_delay / self.dt

    def delay_steps(self, delay: torch.Tensor | None = None) -> torch.Tensor:
        """Return delays clamped to their bounds and converted to (fractional) steps."""
        delay = self.delay if delay is None else delay
        delay = torch.clamp(delay, self.min_delay, self.max_delay)
        steps = to_fractional_steps(delay, self.dt)
        if self.delay_mode == "nearest":
            steps = steps + (torch.round(steps) - steps).detach()
        return steps

    # ------------------------------------------------------- subclass interface

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Apply the connection's linear map with a given weight tensor.

        Shape:
            x: ``(batch, *pre_shape)``; weight: the weight layout;
            returns ``(batch, *post_shape)``.
        """
        raise NotImplementedError

    def rows(self, pre_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Return the fan-out of the given flat presynaptic indices.

        Returns:
            ``(target, weight, delay, owner)``: flat postsynaptic indices, the
            weights and the delays in ms (or ``None``) of each synapse, all of
            one shape ``(n,)``, and ``owner`` of shape ``(n,)``, the position
            in ``pre_index`` each synapse belongs to.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------- delivery

    def emit(self, spikes: torch.Tensor, step: int) -> None:
        """Send the spikes of presynaptic step ``step`` into the ring buffer.

        Shape:
            spikes: ``(batch, *pre_shape)``, 0.0 or 1.0.
        """
        recording = torch.is_grad_enabled() and (
            spikes.requires_grad
            or self.weight.requires_grad
            or (self.delay is not None and self.delay.requires_grad)
        )
        if self.delay is None:
            self._add_to_slot(step % self.slots, self.linear(spikes, self.weight), recording)
        elif recording or not self.has_rows:
            self._emit_by_slot(spikes, step, recording)
        else:
            self._emit_events(spikes, step)

    def receive(self, step: int) -> torch.Tensor:
        """Return and clear the input that arrives at step ``step``.

        Returns:
            The summed arriving input plus bias, ``(batch, *post_shape)``, in
            the synapse's input unit.
        """
        slot = step % self.slots
        arrived = self.in_flight[:, slot]
        if torch.is_grad_enabled() and self.in_flight.requires_grad:
            keep = torch.ones(self.slots, dtype=self.dtype, device=self.device)
            keep[slot] = 0.0
            self.in_flight = self.in_flight * keep.view(1, -1, *([1] * len(self.post_shape)))
        else:
            arrived = arrived.clone()
            self.in_flight[:, slot] = 0.0
        if self.bias is not None:
            arrived = arrived + self.bias
        return arrived

    def _add_to_slot(self, slot: int, value: torch.Tensor, recording: bool) -> None:
        if recording:
            onehot = torch.zeros(self.slots, dtype=self.dtype, device=self.device)
            onehot[slot] = 1.0
            spread = onehot.view(1, -1, *([1] * len(self.post_shape))) * value.unsqueeze(1)
            self.in_flight = self.in_flight + spread
        else:
            self.in_flight[:, slot] += value

    def _emit_by_slot(self, spikes: torch.Tensor, step: int, recording: bool) -> None:
        steps = self.delay_steps()
        whole = torch.floor(steps.detach())
        fraction = steps - whole
        whole = whole.long()
        low, high = int(whole.min().item()), int(whole.max().item())
        has_fraction = bool((fraction.detach() != 0).any())
        for k in range(low, high + (2 if has_fraction else 1)):
            share = (whole == k).to(self.dtype) * (1.0 - fraction)
            if has_fraction:
                share = share + (whole == k - 1).to(self.dtype) * fraction
            if not bool((share.detach() != 0).any()):
                continue
            self._add_to_slot((step + k) % self.slots, self.linear(spikes, self.weight * share), recording)

    def _emit_events(self, spikes: torch.Tensor, step: int) -> None:
        batch_index, pre_index = spikes.reshape(spikes.shape[0], -1).nonzero(as_tuple=True)
        if batch_index.numel() == 0:
            return
        target, weight, delay, owner = self.rows(pre_index)
        steps = self.delay_steps(delay)
        whole = torch.floor(steps)
        fraction = steps - whole
        sample = batch_index[owner]
        post_size = math.prod(self.post_shape)
        flat = self.in_flight.view(-1)
        base = sample * (self.slots * post_size) + target
        slot = (step + whole.long()) % self.slots
        if bool((fraction != 0).any()):
            flat.index_add_(0, base + slot * post_size, weight * (1.0 - fraction))
            flat.index_add_(0, base + ((slot + 1) % self.slots) * post_size, weight * fraction)
        else:
            flat.index_add_(0, base + slot * post_size, weight)

    # ------------------------------------------------------------------ bounds

    @torch.no_grad()
    def apply_bounds(self) -> None:
        """Clamp weights to ``[w_min, w_max]`` and delays to ``[min_delay, max_delay]`` in place."""
        if self.w_min is not None or self.w_max is not None:
            self.weight.clamp_(self.w_min, self.w_max)
        self._mask_weight()
        if self.delay is not None:
            self.delay.clamp_(self.min_delay, self.max_delay)

    def _mask_weight(self) -> None:
        """Zero weights that do not exist (the diagonal of a lateral connection)."""

    @torch.no_grad()
    def apply_update(self, name: Literal["weight", "delay", "bias"], delta: torch.Tensor) -> None:
        """Add ``delta`` to the weights, delays or bias, then apply the bounds.

        Args:
            name: ``"weight"``, ``"delay"`` (ms) or ``"bias"``.
            delta: an update broadcastable to the parameter's shape.
        """
        target = getattr(self, name, None)
        if target is None:
            raise ValueError(f"cannot update {name!r}: this connection has no {name}")
        target.add_(delta.to(target.dtype))
        self.apply_bounds()

    # ------------------------------------------------------------ learning view

    def synaptic(self, pre: torch.Tensor) -> torch.Tensor:
        """Expand a presynaptic quantity ``(batch, *pre_shape)`` to the synapse layout."""
        raise NotImplementedError

    def postsynaptic(self, post: torch.Tensor) -> torch.Tensor:
        """Expand a postsynaptic quantity ``(batch, *post_shape)`` to the synapse layout."""
        raise NotImplementedError

    def per_synapse(self, parameter: torch.Tensor) -> torch.Tensor:
        """Expand a weight-shaped tensor (weights, delays) to the synapse layout."""
        raise NotImplementedError

    def fold(self, update: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        """Sum a per-synapse update in the synapse layout back to the weight's shape.

        Synapses that share a weight (conv2d positions) are summed; the batch
        is reduced by ``reduce``.
        """
        raise NotImplementedError

    def outer(self, pre: torch.Tensor, post: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        """Return ``sum_b pre[b, i] * post[b, j]`` for every synapse, in the weight's shape.

        This is the common term of pair-based rules. The default goes through
        the synapse layout; row-structured connections override it with an
        event-driven version that only touches rows of active presynaptic units.
        """
        return self.fold(self.synaptic(pre) * self.postsynaptic(post), reduce)

    @property
    def synapse_count(self) -> int:
        """The number of distinct synapses (shared weights count once)."""
        return int(self.weight.numel())

    def extra_repr(self) -> str:
        parts = [f"pre_shape={self.pre_shape}", f"post_shape={self.post_shape}"]
        if self.delay is not None:
            parts.append(f"max_delay={self.max_delay:g} ms")
            if self.delay.requires_grad:
                parts.append("learn_delay=True")
        if self.bias is not None:
            parts.append("bias=True")
        if self.w_min is not None or self.w_max is not None:
            parts.append(f"w_bounds=({self.w_min}, {self.w_max})")
        return ", ".join(parts)


WeightInit = Callable[[tuple[int, ...], torch.Generator | None], torch.Tensor]
