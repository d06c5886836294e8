"""Reward-modulated STDP: MSTDP and MSTDP with eligibility traces (Florian, 2007, Neural Comput. 19:1468).

Both rules compute the STDP term of each sample and multiply it by that
sample's reward before reducing over the batch. The reward is one number per
sample, set with :meth:`RewardModulatedRule.set_reward` (a scalar for the
whole batch, or a tensor of shape ``(batch,)``). It stays in force until it
is set again or ``reset_state()`` sets it back to 0. A reward known during a
sample therefore acts at every step. A reward known at the end of a sample
acts on what the eligibility trace still contains over the steps that
follow.
"""

from __future__ import annotations

import torch

from ember.learning.base import Reduce, SpikeTimingRule, Timing, add_events, check_finite, check_positive


class RewardModulatedRule(SpikeTimingRule):
    """Shared parts of MSTDP and MSTDPET: the STDP traces and the per-sample reward.

    Args:
        a_plus: the potentiation amplitude of the STDP term, default 1.0.
        a_minus: the depression amplitude of the STDP term, default 1.0.
        tau_plus: the presynaptic trace time constant in ms, default 20.0.
        tau_minus: the postsynaptic trace time constant in ms, default 20.0.
        gamma: the learning rate, default 0.01.
        reduce: the batch reduction of the reward-weighted updates, ``"mean"``
            (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"`` of presynaptic spikes.
        bounds: the weight dependence (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        reward: the reward of each sample, shape ``(batch,)``, initially 0.
        pre_trace: the presynaptic trace (spikes add 1).
        post_trace: the postsynaptic trace (spikes add 1).
    """

    def __init__(
        self,
        a_plus: float = 1.0,
        a_minus: float = 1.0,
        tau_plus: float = 20.0,
        tau_minus: float = 20.0,
        gamma: float = 0.01,
        *,
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
        self.gamma = check_finite("gamma", gamma)

    def allocate_traces(self) -> None:
        self.register_state("reward", (), 0.0)
        self.register_state("pre_trace", self.pre_trace_shape, 0.0)
        self.register_state("post_trace", self.connection.post_shape, 0.0)

    def set_reward(self, reward: float | torch.Tensor) -> None:
        """Set the reward of each sample; it stays in force until set again or reset.

        Args:
            reward: a number for every sample, or a tensor of shape ``(batch,)``
                (or one element).

        Raises:
            ValueError: if the shape does not fit the batch or a value is not finite.
            RuntimeError: if the rule is not bound yet.
        """
        self._require_bound()
        value = torch.as_tensor(reward, dtype=self.dtype, device=self.device).detach()
        if value.numel() == 1:
            value = value.reshape(()).expand(self.batch_size)
        if tuple(value.shape) != (self.batch_size,):
            raise ValueError(f"reward must be a number or a tensor of shape ({self.batch_size},), got shape {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError("reward must be finite")
        self.reward = value.clone()

    def _sample_scale(self, tensor: torch.Tensor) -> torch.Tensor:
        """Multiply each sample of ``tensor`` by its reward."""
        return tensor * self.reward.reshape(-1, *([1] * (tensor.dim() - 1)))

    def _advance_traces(self, step: int):
        """Advance both traces by one step.

        Returns:
            ``(at_arrival, pre_trace, post_trace_before, post_spikes)``: the
            arrivals weighted to read ``x_post`` at their exact time, ``x_pre``
            with this step's arrivals, ``x_post`` without this step's spikes,
            and this step's postsynaptic spikes.
        """
        events, lateness = self.presynaptic_events(step)
        post_spikes = self.spikes_of(self.post)
        pre_trace = self.pre_trace * self.decay(self.tau_plus)
        post_trace = self.post_trace * self.decay(self.tau_minus)
        at_arrival = self.readout(events, lateness, self.tau_minus)
        increments = self.event_values(events, lateness, self.tau_plus)
        pre_trace = add_events(pre_trace, increments, events, "all_to_all")
        self.pre_trace = pre_trace
        pre_trace = self.causal_read(pre_trace, increments, lateness)
        self.post_trace = add_events(post_trace, post_spikes, post_spikes, "all_to_all")
        return at_arrival, pre_trace, post_trace, post_spikes

    def extra_repr(self) -> str:
        parts = [
            f"a_plus={self.a_plus:g}, a_minus={self.a_minus:g}, tau_plus={self.tau_plus:g} ms, "
            f"tau_minus={self.tau_minus:g} ms, gamma={self.gamma:g}"
        ]
        if super().extra_repr():
            parts.append(super().extra_repr())
        return ", ".join(parts)


class MSTDP(RewardModulatedRule):
    """Reward-modulated STDP without eligibility: the STDP term of each step times the current reward.

    At each step, per sample ``b``:

    ``Δw_b = gamma * r_b * (a_plus * x_pre * [post spike] - a_minus * [pre arrival] * x_post)``

    and the weights change by the batch reduction of ``Δw_b``. With
    ``r_b = 0`` nothing changes; a negative reward reverses the STDP
    window. Traces add 1 per spike (all-to-all). See the module docstring
    for how rewards are held, and :class:`~ember.learning.base.SpikeTimingRule`
    for the event order. Arguments are those of :class:`RewardModulatedRule`.
    """

    def update(self, step: int) -> None:
        at_arrival, pre_trace, post_trace_before, post_spikes = self._advance_traces(step)
        if not bool(self.reward.any()):
            return
        depression = self.pair(self._sample_scale(at_arrival), post_trace_before)
        potentiation = self.pair(self._sample_scale(pre_trace), post_spikes)
        if depression is not None:
            self.update_weights(depression * (-self.gamma * self.a_minus))
        if potentiation is not None:
            self.update_weights(potentiation * (self.gamma * self.a_plus))


class MSTDPET(RewardModulatedRule):
    """Reward-modulated STDP with an eligibility trace per synapse and sample.

    Per sample ``b``, the STDP events of each step feed an eligibility trace
    ``z`` that decays with ``tau_eligibility``:

    ``tau_z dz/dt = -z + ξ(t)``, with ``ξ = a_plus * x_pre * [post spike] - a_minus * [pre arrival] * x_post``

    integrated exactly per step (``z <- z * exp(-dt / tau_z) + ξ / tau_z``),
    and the weights follow ``dw/dt = gamma * r_b * z`` (``Δw_b = gamma * r_b
    * z * dt`` per step), reduced over the batch. A reward held for much
    longer than ``tau_z`` thus gives the same total change as :class:`MSTDP`.
    ``z`` lives in the synapse layout, so its memory is that of one float per
    synapse (per synapse and position for conv2d) and sample.

    Args:
        tau_eligibility: ``tau_z`` in ms, above 0, default 25.0.
        **kwargs: those of :class:`RewardModulatedRule`.

    Attributes:
        eligibility: ``z``, shape ``(batch, *layout)``.
    """

    def __init__(self, *args, tau_eligibility: float = 25.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tau_eligibility = check_positive("tau_eligibility", tau_eligibility, "ms")

    def allocate_traces(self) -> None:
        super().allocate_traces()
        self.register_state("eligibility", self.layout, 0.0)

    def update(self, step: int) -> None:
        at_arrival, pre_trace, post_trace_before, post_spikes = self._advance_traces(step)
        connection = self.connection
        expand_pre = (lambda x: x) if self.per_synapse else connection.synaptic

        # Feed this step's STDP events into z.
        eligibility = self.eligibility * self.decay(self.tau_eligibility)
        if bool(post_spikes.any()):
            eligibility = eligibility + (self.a_plus / self.tau_eligibility) * (
                expand_pre(pre_trace) * connection.postsynaptic(post_spikes) * self.mask
            )
        if bool(at_arrival.any()):
            eligibility = eligibility - (self.a_minus / self.tau_eligibility) * (
                expand_pre(at_arrival) * connection.postsynaptic(post_trace_before) * self.mask
            )
        self.eligibility = eligibility

        if not bool(self.reward.any()) or not bool(eligibility.any()):
            return
        change = connection.fold(self._sample_scale(eligibility), self.reduce)
        self.update_weights(change * (self.gamma * self.dt))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau_eligibility={self.tau_eligibility:g} ms"
