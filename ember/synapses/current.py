"""Current-based synapses with exponential kinetics."""

from __future__ import annotations

import torch

from ember.synapses.base import ParameterValue, Synapse


class ExponentialCurrent(Synapse):
    """A synaptic current that jumps by the arrived weight and decays exponentially.

    ``tau_syn dI/dt = -I``, plus the arrived weights (nA) at each step. One step
    of ``dt`` ms is ``I <- I exp(-dt / tau_syn) + arrived``: a weight that
    arrives at step ``t`` adds ``w exp(-k dt / tau_syn)`` nA to the current of
    step ``t + k``. The current is held constant over each step by the neuron.

    Args:
        tau_syn: the decay time constant in ms, above 0, default 5.0; a
            number or a tensor broadcastable to the postsynaptic shape.
        dt: the step length in ms, or given to :meth:`bind`.
        dtype: the floating point dtype.
        device: where parameters and state live.

    Shape:
        ``arrived`` (nA) and ``v`` (mV): ``(batch_size, *post_shape)``; the
        current returned (nA) has the same shape.

    Attributes:
        current: the synaptic current in nA, initially 0 (after :meth:`bind`).

    Raises:
        ValueError: if ``tau_syn`` is not above 0.

    Examples:
        >>> import torch
        >>> synapse = ExponentialCurrent(tau_syn=10.0, dt=1.0)
        >>> synapse.bind(1, 1)
        >>> synapse(torch.ones(1, 1), torch.zeros(1, 1))[0]
        tensor([[1.]])
        >>> synapse(torch.zeros(1, 1), torch.zeros(1, 1))[0]
        tensor([[0.9048]])
    """

    input_unit = "nA"

    def __init__(
        self,
        tau_syn: ParameterValue = 5.0,
        *,
        dt: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, dtype=dtype, device=device)
        self._add_time_constant("tau_syn", tau_syn)

    def _register_states(self) -> None:
        self.register_state("current", self.post_shape, 0.0)

    def forward(self, arrived: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, None]:
        self._check_arrived(arrived)
        self.current = self.current * torch.exp(-self._step_length() / self.tau_syn) + arrived
        return self.current, None


class DoubleExponentialCurrent(Synapse):
    """A synaptic current with a rise and a decay time constant, normalised to its peak.

    Two traces follow ``tau_rise dr/dt = -r`` and ``tau_decay ds/dt = -s``, and
    both jump by the arrived weights (nA) at each step, integrated exactly
    like :class:`ExponentialCurrent`. The current is ``I = N (s - r)``. For
    one weight ``w`` arriving at step ``t``, the current at step ``t + k`` is
    ``w N (exp(-k dt / tau_decay) - exp(-k dt / tau_rise))``: 0 at the arrival
    step, then a rise and a slower decay.

    ``N = 1 / (exp(-t_peak / tau_decay) - exp(-t_peak / tau_rise))`` with
    ``t_peak = tau_rise tau_decay ln(tau_decay / tau_rise) / (tau_decay - tau_rise)``
    normalises the continuous-time kernel to a peak of 1, so a weight of
    ``w`` nA gives a peak current of ``w`` nA at ``t_peak`` ms (sampled on the
    step grid, the largest value is at most ``w``).

    Args:
        tau_rise: the rise time constant in ms, above 0 and below
            ``tau_decay``, default 1.0.
        tau_decay: the decay time constant in ms, default 5.0.
        dt: the step length in ms, or given to :meth:`bind`.
        dtype: the floating point dtype.
        device: where parameters and state live.

        Both time constants are numbers or tensors broadcastable to the
        postsynaptic shape.

    Shape:
        ``arrived`` (nA) and ``v`` (mV): ``(batch_size, *post_shape)``; the
        current returned (nA) has the same shape.

    Attributes:
        rise_trace: ``r`` in nA, initially 0 (after :meth:`bind`).
        decay_trace: ``s`` in nA, initially 0 (after :meth:`bind`).

    Raises:
        ValueError: if a time constant is not above 0 or ``tau_rise`` is not
            below ``tau_decay``.

    Examples:
        >>> import torch
        >>> synapse = DoubleExponentialCurrent(tau_rise=1.0, tau_decay=5.0, dt=0.1)
        >>> synapse.bind(1, 1)
        >>> currents = [synapse(torch.full((1, 1), float(k == 0)), torch.zeros(1, 1))[0] for k in range(100)]
        >>> round(max(current.item() for current in currents), 4)
        1.0
    """

    input_unit = "nA"

    def __init__(
        self,
        tau_rise: ParameterValue = 1.0,
        tau_decay: ParameterValue = 5.0,
        *,
        dt: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, dtype=dtype, device=device)
        self._add_time_constant("tau_rise", tau_rise)
        self._add_time_constant("tau_decay", tau_decay)
        if not bool((self.tau_rise < self.tau_decay).all()):
            raise ValueError(
                f"tau_rise must be below tau_decay for every neuron, got tau_rise = {tau_rise!r} ms and "
                f"tau_decay = {tau_decay!r} ms; for a single time constant use ExponentialCurrent"
            )

    @property
    def peak_factor(self) -> torch.Tensor:
        """``N``, the factor that normalises the kernel to a peak of 1."""
        t_peak = self.tau_rise * self.tau_decay * torch.log(self.tau_decay / self.tau_rise)
        t_peak = t_peak / (self.tau_decay - self.tau_rise)
        return 1.0 / (torch.exp(-t_peak / self.tau_decay) - torch.exp(-t_peak / self.tau_rise))

    def _register_states(self) -> None:
        self.register_state("rise_trace", self.post_shape, 0.0)
        self.register_state("decay_trace", self.post_shape, 0.0)

    def forward(self, arrived: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, None]:
        self._check_arrived(arrived)
        dt = self._step_length()

        # Decay both traces exactly, then add the arrived weights to each.
        self.rise_trace = self.rise_trace * torch.exp(-dt / self.tau_rise) + arrived
        self.decay_trace = self.decay_trace * torch.exp(-dt / self.tau_decay) + arrived

        return self.peak_factor * (self.decay_trace - self.rise_trace), None
