"""The power-law weight-dependent rule of Diehl and Cook (2015, Front. Comput. Neurosci. 9:99)."""

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
from ember.learning.stdp import TraceMode


class PowerLawSTDP(SpikeTimingRule):
    """Potentiation or depression at each postsynaptic spike, by how far the presynaptic trace is from a target.

    At each postsynaptic spike every incoming synapse changes by

    ``Δw = eta * (x_pre - x_target) * (w_max - w) ** mu``

    where ``x_pre`` is the presynaptic trace (time constant ``tau_pre``; a
    spike adds 1, or sets it to 1 with ``trace="nearest"``). Inputs that were
    recently active (``x_pre > x_target``) are potentiated, the others are
    depressed, and the factor ``(w_max - w) ** mu`` slows potentiation near
    ``w_max``. Presynaptic spikes themselves change no weight. The defaults
    ``x_target = 0.4`` and ``mu = 0.2`` are those of the authors' code. The
    batch reduction and event order are those of
    :class:`~ember.learning.base.SpikeTimingRule`.

    Args:
        eta: the learning rate, default 0.01 (weight units).
        x_target: the target value of the presynaptic trace, default 0.4.
        exponent: ``mu``, at least 0, default 0.2.
        tau_pre: the time constant of ``x_pre`` in ms, default 20.0.
        w_max: the maximum weight, or ``None`` (default) for the connection's ``w_max``.
        trace: ``"all_to_all"`` (default) or ``"nearest"``.
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"`` of presynaptic spikes.
        bounds: further weight dependence (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        pre_trace: ``x_pre``, ``(batch, *pre_shape)`` or per synapse.

    Raises:
        ValueError: for invalid values, or at binding if neither this rule nor
            the connection gives ``w_max``.
    """

    def __init__(
        self,
        eta: float = 0.01,
        x_target: float = 0.4,
        exponent: float = 0.2,
        tau_pre: float = 20.0,
        w_max: float | None = None,
        *,
        trace: TraceMode = "all_to_all",
        reduce: Reduce = "mean",
        timing: Timing = "arrival",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, timing=timing, bounds=bounds, dtype=dtype, device=device)
        self.eta = check_finite("eta", eta)
        self.x_target = check_finite("x_target", x_target)
        self.exponent = check_finite("exponent", exponent)
        if self.exponent < 0:
            raise ValueError(f"exponent must be at least 0, got {exponent!r}")
        self.tau_pre = check_positive("tau_pre", tau_pre, "ms")
        self.w_max = None if w_max is None else check_finite("w_max", w_max)
        self.trace: TraceMode = check_choice("trace", trace, get_args(TraceMode))  # type: ignore[assignment]

    def check_connection(self, connection, post) -> None:
        if self.w_max is None:
            if connection.w_max is None:
                raise ValueError("PowerLawSTDP needs w_max: pass w_max= to the rule or give the connection w_max=")
            self.w_max = float(connection.w_max)

    def allocate_traces(self) -> None:
        self.register_state("pre_trace", self.pre_trace_shape, 0.0)

    def update(self, step: int) -> None:
        events, lateness = self.presynaptic_events(step)
        post_spikes = self.spikes_of(self.post)
        pre_trace = self.pre_trace * self.decay(self.tau_pre)
        increments = self.event_values(events, lateness, self.tau_pre)
        pre_trace = add_events(pre_trace, increments, events, self.trace)
        self.pre_trace = pre_trace
        pre_trace = self.causal_read(pre_trace, increments, lateness)

        # Padding entries of a convolution are no synapses: pair() masks them in the synapse layout,
        # and outer() reads them as zero presynaptic activity.
        correlation = self.pair(pre_trace - self.x_target, post_spikes) if bool(post_spikes.any()) else None
        if correlation is None:
            return
        weight = self.connection.weight.detach()
        headroom = (self.w_max - weight).clamp(min=0.0) ** self.exponent
        self.update_weights(self.eta * correlation * headroom)
