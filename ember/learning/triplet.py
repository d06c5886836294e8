"""Triplet STDP (Pfister and Gerstner, 2006, J. Neurosci. 26:9673)."""

from __future__ import annotations

from typing import get_args

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
from ember.learning.stdp import TraceMode, scaled


class TripletSTDP(SpikeTimingRule):
    """Triplet STDP: pair terms plus terms that depend on a second, slower trace of the other side.

    Presynaptic traces ``r1`` (``tau_plus``) and ``r2`` (``tau_x``), and
    postsynaptic traces ``o1`` (``tau_minus``) and ``o2`` (``tau_y``), each
    decay by ``exp(-dt / tau)`` per step.

    - When a presynaptic spike reaches the synapse:
      ``Δw = -o1 * (a2_minus + a3_minus * r2)``, with ``r2`` from before this
      spike; then ``r1`` and ``r2`` take in the spike.
    - When the postsynaptic neuron spikes:
      ``Δw = +r1 * (a2_plus + a3_plus * o2)``, with ``o2`` from before this
      spike; then ``o1`` and ``o2`` take in the spike.

    A spike adds 1 to each trace (``trace="all_to_all"``) or sets it to 1
    (``"nearest"``). The defaults are the all-to-all fit to visual cortex
    data in table 4 of Pfister and Gerstner (2006). The batch reduction and
    the event order are those of :class:`~ember.learning.base.SpikeTimingRule`.

    Args:
        a2_plus: pair potentiation amplitude, default 5e-10.
        a3_plus: triplet potentiation amplitude, default 6.2e-3.
        a2_minus: pair depression amplitude, default 7e-3.
        a3_minus: triplet depression amplitude, default 2.3e-4.
        tau_plus: time constant of ``r1`` in ms, default 16.8.
        tau_minus: time constant of ``o1`` in ms, default 33.7.
        tau_x: time constant of ``r2`` in ms, default 101.0.
        tau_y: time constant of ``o2`` in ms, default 125.0.
        trace: ``"all_to_all"`` (default) or ``"nearest"``.
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"`` of presynaptic spikes.
        bounds: the weight dependence (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        r1, r2: presynaptic traces, ``(batch, *pre_shape)`` or per synapse.
        o1, o2: postsynaptic traces, ``(batch, *post_shape)``.

    Raises:
        ValueError: for a time constant that is not above 0, an amplitude that
            is not finite, or an unknown option.
    """

    def __init__(
        self,
        a2_plus: float = 5e-10,
        a3_plus: float = 6.2e-3,
        a2_minus: float = 7e-3,
        a3_minus: float = 2.3e-4,
        tau_plus: float = 16.8,
        tau_minus: float = 33.7,
        tau_x: float = 101.0,
        tau_y: float = 125.0,
        *,
        trace: TraceMode = "all_to_all",
        reduce: Reduce = "mean",
        timing: Timing = "arrival",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, timing=timing, bounds=bounds, dtype=dtype, device=device)
        self.a2_plus = check_finite("a2_plus", a2_plus)
        self.a3_plus = check_finite("a3_plus", a3_plus)
        self.a2_minus = check_finite("a2_minus", a2_minus)
        self.a3_minus = check_finite("a3_minus", a3_minus)
        self.tau_plus = check_positive("tau_plus", tau_plus, "ms")
        self.tau_minus = check_positive("tau_minus", tau_minus, "ms")
        self.tau_x = check_positive("tau_x", tau_x, "ms")
        self.tau_y = check_positive("tau_y", tau_y, "ms")
        self.trace: TraceMode = check_choice("trace", trace, get_args(TraceMode))  # type: ignore[assignment]

    def allocate_traces(self) -> None:
        for name in ("r1", "r2"):
            self.register_state(name, self.pre_trace_shape, 0.0)
        for name in ("o1", "o2"):
            self.register_state(name, self.connection.post_shape, 0.0)

    def update(self, step: int) -> None:
        events, lateness = self.presynaptic_events(step)
        post_spikes = self.spikes_of(self.post)
        r1 = self.r1 * self.decay(self.tau_plus)
        r2 = self.r2 * self.decay(self.tau_x)
        o1 = self.o1 * self.decay(self.tau_minus)
        o2 = self.o2 * self.decay(self.tau_y)

        # Depression at arrivals, with o1 and r2 read at the exact arrival time, r2 from before the arrival.
        at_arrival = self.readout(events, lateness, self.tau_minus)
        r2_at_arrival = r2 if lateness is None else r2 * torch.exp(lateness * (self.dt / self.tau_x))
        depression = self.pair(at_arrival * (self.a2_minus + self.a3_minus * r2_at_arrival), o1)
        r1_increments = self.event_values(events, lateness, self.tau_plus)
        r1 = add_events(r1, r1_increments, events, self.trace)
        r2 = add_events(r2, self.event_values(events, lateness, self.tau_x), events, self.trace)

        # Potentiation at postsynaptic spikes, with o2 from before the spike.
        potentiation = self.pair(self.causal_read(r1, r1_increments, lateness), post_spikes * (self.a2_plus + self.a3_plus * o2))
        o1 = add_events(o1, post_spikes, post_spikes, self.trace)
        o2 = add_events(o2, post_spikes, post_spikes, self.trace)

        self.r1, self.r2, self.o1, self.o2 = r1, r2, o1, o2
        self.update_weights(scaled(depression, -1.0))
        self.update_weights(potentiation)
