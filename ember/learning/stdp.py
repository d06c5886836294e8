"""Pair-based spike-timing-dependent plasticity (STDP) with exponential traces."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ember.learning.base import (
    Reduce,
    SpikeTimingRule,
    Timing,
    add_events,
    check_choice,
    check_finite,
    check_positive,
)

TraceMode = Literal["all_to_all", "nearest"]


def scaled(update: torch.Tensor | None, factor: float) -> torch.Tensor | None:
    """Return ``update * factor``, or ``None`` if there is no update or the factor is 0."""
    if update is None or factor == 0.0:
        return None
    return update * factor


class STDP(SpikeTimingRule):
    """Pair-based STDP: potentiation at postsynaptic spikes, depression at presynaptic arrivals.

    Each synapse ``i -> j`` keeps a presynaptic trace ``x_pre`` (time
    constant ``tau_plus``) and each postsynaptic neuron a trace ``x_post``
    (time constant ``tau_minus``). Both decay by ``exp(-dt / tau)`` per step.

    - When a presynaptic spike reaches the synapse: ``Δw = -a_minus * x_post``,
      then ``x_pre`` takes in the spike.
    - When neuron ``j`` spikes: ``Δw = +a_plus * x_pre``, then ``x_post``
      takes in the spike.

    With ``trace="all_to_all"`` a spike adds 1 to its trace, so every earlier
    spike of the other side counts. With ``trace="nearest"`` a spike sets the
    trace to 1, so only the nearest one counts. For one pair of spikes with
    ``Δt = t_post - t_pre`` (ms) this gives ``Δw = a_plus * exp(-Δt / tau_plus)``
    for ``Δt >= 0`` and ``Δw = -a_minus * exp(Δt / tau_minus)`` for ``Δt < 0``.
    Negative ``a_plus`` or ``a_minus`` give anti-Hebbian variants.

    Spikes that arrive between two steps (fractional delays) count at their
    exact arrival time, except that a postsynaptic spike in the step where
    their delivery starts pairs with them with ``Δt = 0``. The batch reduction and the event order are those of
    :class:`~ember.learning.base.SpikeTimingRule`.

    Args:
        a_plus: the potentiation amplitude, default 0.01 (weight units).
        a_minus: the depression amplitude, default 0.01 (weight units).
        tau_plus: the time constant of the presynaptic trace in ms, default 20.0.
        tau_minus: the time constant of the postsynaptic trace in ms, default 20.0.
        trace: ``"all_to_all"`` (default) or ``"nearest"``.
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"`` of presynaptic spikes.
        bounds: the weight dependence (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        pre_trace: ``x_pre``, shape ``(batch, *pre_shape)``, or
            ``(batch, *layout)`` per synapse with arrival timing and delays.
        post_trace: ``x_post``, shape ``(batch, *post_shape)``.

    Raises:
        ValueError: for a time constant that is not above 0, an amplitude that
            is not finite, or an unknown ``trace``, ``reduce`` or ``timing``.

    Examples:
        >>> import torch
        >>> from ember.connections import Dense
        >>> from ember.core import Node
        >>> pre, post = Node(1, dt=1.0), Node(1, dt=1.0)
        >>> link = Dense(1, 1, torch.zeros(1, 1), dt=1.0)
        >>> rule = STDP(a_plus=0.01, a_minus=0.0)
        >>> rule.bind(link, pre, post)
        >>> pre.spikes = torch.ones(1, 1); rule.step(0)
        >>> pre.spikes = torch.zeros(1, 1); post.spikes = torch.ones(1, 1); rule.step(1)
        >>> round(link.weight.item(), 6)  # 0.01 * exp(-1 / 20)
        0.009512
    """

    def __init__(
        self,
        a_plus: float = 0.01,
        a_minus: float = 0.01,
        tau_plus: float = 20.0,
        tau_minus: float = 20.0,
        *,
        trace: TraceMode = "all_to_all",
        reduce: Reduce = "mean",
        timing: Timing = "arrival",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, timing=timing, bounds=bounds, dtype=dtype, device=device)
        self.a_plus = check_finite("a_plus", a_plus)
        self.a_minus = check_finite("a_minus", a_minus)
        self.tau_plus = check_positive("tau_plus", tau_plus, "ms")
        self.tau_minus = check_positive("tau_minus", tau_minus, "ms")
        self.trace: TraceMode = check_choice("trace", trace, get_args(TraceMode))  # type: ignore[assignment]

    def allocate_traces(self) -> None:
        self.register_state("pre_trace", self.pre_trace_shape, 0.0)
        self.register_state("post_trace", self.connection.post_shape, 0.0)

    def update(self, step: int) -> None:
        events, lateness = self.presynaptic_events(step)
        post_spikes = self.spikes_of(self.post)
        pre_trace = self.pre_trace * self.decay(self.tau_plus)
        post_trace = self.post_trace * self.decay(self.tau_minus)

        # Depression: each arrival reads the postsynaptic trace at its exact arrival time.
        depression = self.pair(self.readout(events, lateness, self.tau_minus), post_trace)

        # Potentiation: each postsynaptic spike reads the presynaptic trace, this step's arrivals included.
        increments = self.event_values(events, lateness, self.tau_plus)
        pre_trace = add_events(pre_trace, increments, events, self.trace)
        potentiation = self.pair(self.causal_read(pre_trace, increments, lateness), post_spikes)
        post_trace = add_events(post_trace, post_spikes, post_spikes, self.trace)

        self.pre_trace = pre_trace
        self.post_trace = post_trace
        self.update_weights(scaled(depression, -self.a_minus))
        self.update_weights(scaled(potentiation, self.a_plus))

    def extra_repr(self) -> str:
        parts = [
            f"a_plus={self.a_plus:g}, a_minus={self.a_minus:g}, tau_plus={self.tau_plus:g} ms, tau_minus={self.tau_minus:g} ms"
        ]
        if self.trace != "all_to_all":
            parts.append(f"trace={self.trace!r}")
        if super().extra_repr():
            parts.append(super().extra_repr())
        return ", ".join(parts)
