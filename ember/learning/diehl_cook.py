"""The STDP rule of Diehl and Cook (2015, Front. Comput. Neurosci. 9:99), as in their published code."""

from __future__ import annotations

import torch

from ember.learning.base import Reduce, SpikeTimingRule, Timing, add_events, check_finite, check_positive
from ember.learning.stdp import scaled


class DiehlCookSTDP(SpikeTimingRule):
    """Trace STDP with a slow postsynaptic trace gating potentiation.

    One presynaptic trace ``x_pre`` (``tau_pre``) and two postsynaptic traces
    ``x_post1`` (``tau_post1``) and ``x_post2`` (``tau_post2``) decay by
    ``exp(-dt / tau)`` per step and are *reset to 1* by a spike.

    - When a presynaptic spike reaches the synapse:
      ``Δw = -nu_pre * x_post1``, then ``x_pre = 1``.
    - When the postsynaptic neuron spikes:
      ``Δw = +nu_post * x_pre * x_post2``, with ``x_post2`` from before this
      spike; then ``x_post1 = x_post2 = 1``.

    The defaults are those of the authors' code for the excitatory input
    weights (learning rates 1e-4 and 1e-2, trace time constants 20, 20 and
    40 ms). Their weights are hard-bounded to ``[0, 1]``: give the
    connection ``w_min=0.0, w_max=1.0``. The batch reduction and the event
    order are those of :class:`~ember.learning.base.SpikeTimingRule`.

    Args:
        nu_pre: the depression rate at presynaptic spikes, default 1e-4.
        nu_post: the potentiation rate at postsynaptic spikes, default 1e-2.
        tau_pre: the time constant of ``x_pre`` in ms, default 20.0.
        tau_post1: the time constant of ``x_post1`` in ms, default 20.0.
        tau_post2: the time constant of ``x_post2`` in ms, default 40.0.
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"`` of presynaptic spikes.
        bounds: the weight dependence (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        pre_trace: ``x_pre``, ``(batch, *pre_shape)`` or per synapse.
        post_trace1: ``x_post1``; post_trace2: ``x_post2``; both ``(batch, *post_shape)``.

    Raises:
        ValueError: for a time constant that is not above 0 or a rate that is not finite.
    """

    def __init__(
        self,
        nu_pre: float = 1e-4,
        nu_post: float = 1e-2,
        tau_pre: float = 20.0,
        tau_post1: float = 20.0,
        tau_post2: float = 40.0,
        *,
        reduce: Reduce = "mean",
        timing: Timing = "arrival",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, timing=timing, bounds=bounds, dtype=dtype, device=device)
        self.nu_pre = check_finite("nu_pre", nu_pre)
        self.nu_post = check_finite("nu_post", nu_post)
        self.tau_pre = check_positive("tau_pre", tau_pre, "ms")
        self.tau_post1 = check_positive("tau_post1", tau_post1, "ms")
        self.tau_post2 = check_positive("tau_post2", tau_post2, "ms")

    def allocate_traces(self) -> None:
        self.register_state("pre_trace", self.pre_trace_shape, 0.0)
        self.register_state("post_trace1", self.connection.post_shape, 0.0)
        self.register_state("post_trace2", self.connection.post_shape, 0.0)

    def update(self, step: int) -> None:
        events, lateness = self.presynaptic_events(step)
        post_spikes = self.spikes_of(self.post)
        pre_trace = self.pre_trace * self.decay(self.tau_pre)
        post_trace1 = self.post_trace1 * self.decay(self.tau_post1)
        post_trace2 = self.post_trace2 * self.decay(self.tau_post2)

        # Depression at arrivals reads x_post1 of earlier steps.
        depression = self.pair(self.readout(events, lateness, self.tau_post1), post_trace1)
        increments = self.event_values(events, lateness, self.tau_pre)
        pre_trace = add_events(pre_trace, increments, events, "nearest")

        # Potentiation at postsynaptic spikes reads x_pre and x_post2 from before the spike.
        potentiation = self.pair(self.causal_read(pre_trace, increments, lateness), post_spikes * post_trace2)
        post_trace1 = add_events(post_trace1, post_spikes, post_spikes, "nearest")
        post_trace2 = add_events(post_trace2, post_spikes, post_spikes, "nearest")

        self.pre_trace, self.post_trace1, self.post_trace2 = pre_trace, post_trace1, post_trace2
        self.update_weights(scaled(depression, -self.nu_pre))
        self.update_weights(scaled(potentiation, self.nu_post))
