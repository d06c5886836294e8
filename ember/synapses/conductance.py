"""Conductance-based synapses."""

from __future__ import annotations

import torch

from ember.synapses.base import ParameterValue, Synapse


class Conductance(Synapse):
    """A synaptic conductance that jumps by the arrived weight, decays exponentially and drives toward ``e_rev``.

    ``tau_syn dg/dt = -g``, plus the arrived weights (µS) at each step; one
    step is ``g <- g exp(-dt / tau_syn) + arrived``. The current is

    ``I = g (e_rev - v)``  (µS × mV = nA),

    with ``v`` the postsynaptic potential before the step's integration. It is
    positive (depolarising) below ``e_rev`` and negative above it, so
    ``e_rev = 0`` mV makes an excitatory and ``e_rev = -80`` mV an inhibitory
    synapse.

    Args:
        tau_syn: the decay time constant in ms, above 0, default 5.0.
        e_rev: the reversal potential in mV, default 0.0.
        dt: the step length in ms, or given to :meth:`bind`.
        dtype: the floating point dtype.
        device: where parameters and state live.

        Both parameters are numbers or tensors broadcastable to the
        postsynaptic shape.

    Shape:
        ``arrived`` (µS) and ``v`` (mV): ``(batch_size, *post_shape)``; the
        current returned (nA) has the same shape.

    Attributes:
        g: the synaptic conductance in µS, initially 0 (after :meth:`bind`).

    Raises:
        ValueError: if ``tau_syn`` is not above 0 or ``e_rev`` is not finite.

    Examples:
        >>> import torch
        >>> synapse = Conductance(tau_syn=5.0, e_rev=0.0, dt=1.0)
        >>> synapse.bind(1, 1)
        >>> synapse(torch.full((1, 1), 0.01), torch.full((1, 1), -65.0))[0]
        tensor([[0.6500]])
    """

    input_unit = "µS"

    def __init__(
        self,
        tau_syn: ParameterValue = 5.0,
        e_rev: ParameterValue = 0.0,
        *,
        dt: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, dtype=dtype, device=device)
        self._add_time_constant("tau_syn", tau_syn)
        self._add_parameter("e_rev", e_rev, "mV")

    def _register_states(self) -> None:
        self.register_state("g", self.post_shape, 0.0)

    def forward(self, arrived: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, None]:
        self._check_arrived(arrived)
        self.g = self.g * torch.exp(-self._step_length() / self.tau_syn) + arrived
        return self.g * (self.e_rev - v), None
