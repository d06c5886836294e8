"""Delay-adjusted STDP: learning of synaptic delays (and optionally weights) from spike timing.

The rule is the delay plasticity of Nadafian and Ganjtabesh (Neural
Computation, doi:10.1162/neco_a_01674). For a synapse ``i -> j`` with delay
``d`` let ``t_pre`` be the emission time of the last presynaptic spike that
reached the synapse and ``t_post`` the last postsynaptic spike. With the
delay-adjusted time difference ``Δt = t_post - (t_pre + d)`` (ms):

- an input that arrived before (or with) the postsynaptic spike,
  ``Δt >= 0``, has its delay shortened by ``b_minus * exp(-Δt / tau_minus)``;
- an input that arrives after it, ``Δt < 0``, has its delay lengthened by
  ``b_plus * exp(Δt / tau_plus)``.

Inputs that arrive just before the postsynaptic spike are shortened most, so
the arrival times of the inputs that make a neuron fire converge, and the
neuron's spike moves earlier. Inputs that arrive after the spike are pushed
later, away from it. Updates happen on events only: at a postsynaptic spike
for every synapse onto that neuron (pairing with the last arrival), and at an
arrival (pairing with the last postsynaptic spike before it).
"""

from __future__ import annotations

import torch

from ember.learning.base import (
    Reduce,
    SpikeTimingRule,
    check_finite,
    check_non_negative,
    check_positive,
    existing_weights,
    postsynaptic_sum,
)


class DelayAdjustedSTDP(SpikeTimingRule):
    """Delay learning (and optional weight STDP) from the delay-adjusted spike-time difference.

    See the module docstring for the rule. The weight part uses the same
    ``Δt``: ``Δw = +a_plus * exp(-Δt / weight_tau_plus)`` for ``Δt >= 0`` and
    ``Δw = -a_minus * exp(Δt / weight_tau_minus)`` for ``Δt < 0``; it is off
    by default (``a_plus = a_minus = 0``).

    Stop condition: when ``stop_below`` (``c``, ms) is set, delay learning
    onto a postsynaptic neuron stops for good once any of its incoming delays
    is below ``c``. Requiring ``c > b_minus`` keeps every delay above
    ``c - b_minus >= 0`` (with ``reduce="mean"`` and one event per synapse
    and step). For conv2d, whose delays are shared by every position of a
    map, learning stops for the whole map. Delays are also clamped to
    ``[d_min, d_max]``.

    Pairs use the nearest spikes. Presynaptic spikes are timed at their
    arrival through the current delays (see
    :class:`~ember.learning.base.ArrivalTracker`), at their exact fractional
    arrival time. An input counts from the step in which the connection
    starts to deliver it: with a delay ``k + f`` that is step ``k`` after
    emission, where ``1 - f`` of the weight arrives. A postsynaptic spike in
    that step therefore pairs with the input as causal, with
    ``Δt = max(t_post - (t_pre + d), 0) = 0``, and the delay is shortened by
    the full ``b_minus``. Later spikes use the exact ``Δt``. Updates are
    reduced over the batch by ``reduce``.

    Args:
        b_minus: the largest delay decrease per event in ms, at least 0, default 1.0.
        b_plus: the largest delay increase per event in ms, at least 0, default 1.0.
        tau_minus: the time constant of delay decreases in ms, default 5.0.
        tau_plus: the time constant of delay increases in ms, default 5.0.
        a_plus: the weight potentiation amplitude, default 0.0.
        a_minus: the weight depression amplitude, default 0.0.
        weight_tau_plus: the time constant of potentiation in ms, default 20.0.
        weight_tau_minus: the time constant of depression in ms, default 20.0.
        stop_below: ``c`` in ms, above ``b_minus``, or ``None`` (default)
            for no stop condition.
        d_min: the smallest delay in ms, default the connection's ``min_delay``.
        d_max: the largest delay in ms, default the connection's ``max_delay``.
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        bounds: the weight dependence of the weight part
            (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        arrival_age: steps since the last presynaptic arrival at each synapse,
            ``inf`` before the first, shape ``(batch, *layout)``.
        post_age: steps since the last postsynaptic spike, ``inf`` before the
            first, shape ``(batch, *post_shape)``.

    Raises:
        ValueError: for invalid values, ``stop_below`` not above ``b_minus``,
            or at binding a connection without delays or delay limits outside
            the connection's ``[min_delay, max_delay]``.

    Examples:
        >>> rule = DelayAdjustedSTDP(b_minus=1.0, b_plus=1.0, tau_minus=5.0, tau_plus=5.0, stop_below=1.5)
    """

    def __init__(
        self,
        b_minus: float = 1.0,
        b_plus: float = 1.0,
        tau_minus: float = 5.0,
        tau_plus: float = 5.0,
        *,
        a_plus: float = 0.0,
        a_minus: float = 0.0,
        weight_tau_plus: float = 20.0,
        weight_tau_minus: float = 20.0,
        stop_below: float | None = None,
        d_min: float | None = None,
        d_max: float | None = None,
        reduce: Reduce = "mean",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, timing="arrival", bounds=bounds, dtype=dtype, device=device)
        self.b_minus = check_non_negative("b_minus", b_minus, "ms")
        self.b_plus = check_non_negative("b_plus", b_plus, "ms")
        self.tau_minus = check_positive("tau_minus", tau_minus, "ms")
        self.tau_plus = check_positive("tau_plus", tau_plus, "ms")
        self.a_plus = check_finite("a_plus", a_plus)
        self.a_minus = check_finite("a_minus", a_minus)
        self.weight_tau_plus = check_positive("weight_tau_plus", weight_tau_plus, "ms")
        self.weight_tau_minus = check_positive("weight_tau_minus", weight_tau_minus, "ms")
        self.stop_below = None if stop_below is None else check_finite("stop_below", stop_below, "ms")
        if self.stop_below is not None and self.stop_below <= self.b_minus:
            raise ValueError(
                f"stop_below (c = {self.stop_below} ms) must be above b_minus ({self.b_minus} ms), "
                "so that no delay can be shortened below 0; raise stop_below or lower b_minus"
            )
        self.d_min = None if d_min is None else check_non_negative("d_min", d_min, "ms")
        self.d_max = None if d_max is None else check_non_negative("d_max", d_max, "ms")

    def check_connection(self, connection, post) -> None:
        if connection.delay is None:
            raise ValueError(
                "DelayAdjustedSTDP needs a connection with delays: pass delay= (ms) and a max_delay= that leaves room to grow"
            )
        d_min = connection.min_delay if self.d_min is None else self.d_min
        d_max = connection.max_delay if self.d_max is None else self.d_max
        if d_min < connection.min_delay - 1e-12 or d_max > connection.max_delay + 1e-12 or d_min > d_max:
            raise ValueError(
                f"delay limits [d_min, d_max] = [{d_min}, {d_max}] ms must be ordered and lie within the connection's "
                f"[min_delay, max_delay] = [{connection.min_delay}, {connection.max_delay}] ms"
            )
        self.d_min, self.d_max = float(d_min), float(d_max)

    def allocate_traces(self) -> None:
        self.register_state("arrival_age", self.layout, float("inf"))
        self.register_state("post_age", self.connection.post_shape, float("inf"))
        self.register_buffer("synapse_weights", existing_weights(self.connection), persistent=False)

    def update(self, step: int) -> None:
        connection = self.connection
        events, lateness = self.presynaptic_events(step)
        if lateness is None:
            lateness = torch.zeros((), dtype=self.dtype, device=self.device)
        post_spikes = self.spikes_of(self.post)
        arrival_age = self.arrival_age + 1.0
        post_age = self.post_age + 1.0
        if not bool(events.any()) and not bool(post_spikes.any()):
            self.arrival_age, self.post_age = arrival_age, post_age
            return

        # Arrivals after the last postsynaptic spike of an earlier step: Δt = t_post - t_arrival < 0.
        has_post = torch.isfinite(post_age)
        post_age_at_synapse = connection.postsynaptic(torch.where(has_post, post_age, torch.zeros_like(post_age)))
        anti_causal_dt = (lateness - post_age_at_synapse) * self.dt
        anti_causal = events * connection.postsynaptic(has_post.to(self.dtype)) * self.mask * (anti_causal_dt < 0)
        anti_causal_dt = torch.where(anti_causal > 0, anti_causal_dt, torch.zeros_like(anti_causal_dt))
        arrival_age = torch.where(events > 0, lateness, arrival_age)

        # Postsynaptic spikes after the last arrival, this step's included: Δt = t_post - t_arrival >= 0.
        has_arrival = torch.isfinite(arrival_age)
        causal = has_arrival.to(self.dtype) * connection.postsynaptic(post_spikes) * self.mask
        # An arrival whose delivery started at this step (negative age) pairs with Δt = 0.
        causal_dt = torch.where(causal > 0, arrival_age.clamp(min=0.0), torch.zeros_like(arrival_age)) * self.dt
        post_age = torch.where(post_spikes > 0, torch.zeros_like(post_age), post_age)
        self.arrival_age, self.post_age = arrival_age, post_age

        delay_change = anti_causal * self.b_plus * torch.exp(anti_causal_dt / self.tau_plus)
        delay_change = delay_change - causal * self.b_minus * torch.exp(-causal_dt / self.tau_minus)
        self._update_delays(delay_change)

        if self.a_plus != 0.0 or self.a_minus != 0.0:
            weight_change = causal * self.a_plus * torch.exp(-causal_dt / self.weight_tau_plus)
            weight_change = weight_change - anti_causal * self.a_minus * torch.exp(anti_causal_dt / self.weight_tau_minus)
            if bool(weight_change.any()):
                self.update_weights(connection.fold(weight_change, self.reduce))

    def _update_delays(self, delay_change: torch.Tensor) -> None:
        """Apply a synapse-layout delay change, honouring the stop condition and the delay limits."""
        connection = self.connection
        if self.stop_below is not None:
            delay = connection.delay.detach()
            short = ((delay < self.stop_below) & self.synapse_weights).to(self.dtype)
            stopped = postsynaptic_sum(connection, connection.per_synapse(short)) > 0
            delay_change = delay_change * connection.postsynaptic((~stopped).to(self.dtype))
        if not bool(delay_change.any()):
            return
        delay = connection.delay.detach()
        change = connection.fold(delay_change, self.reduce)
        connection.apply_update("delay", torch.clamp(delay + change, self.d_min, self.d_max) - delay)

    def extra_repr(self) -> str:
        parts = [
            f"b_minus={self.b_minus:g} ms, b_plus={self.b_plus:g} ms, tau_minus={self.tau_minus:g} ms, tau_plus={self.tau_plus:g} ms"
        ]
        if self.a_plus or self.a_minus:
            parts.append(f"a_plus={self.a_plus:g}, a_minus={self.a_minus:g}")
        if self.stop_below is not None:
            parts.append(f"stop_below={self.stop_below:g} ms")
        return ", ".join(parts)
