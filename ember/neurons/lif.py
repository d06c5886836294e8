"""Leaky integrate-and-fire neurons."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from ember.neurons.base import ParameterValue, Population
from ember.neurons.functional import LIFParameters, LIFState, lif_step
from ember.surrogate import DEFAULT_SLOPE, SurrogateName


class LIF(Population):
    """Leaky integrate-and-fire neurons, integrated exactly.

    The membrane potential ``v`` (mV) follows

    ``tau_mem dv/dt = -(v - v_rest) + R I``

    with ``I`` (nA) constant over each step, so one step of ``dt`` ms is
    ``v <- v_inf + (v - v_inf) exp(-dt / tau_mem)`` with ``v_inf = v_rest + R I``.
    A voltage ``jump`` is added after integration. A neuron that is not
    refractory and whose ``v`` reaches ``v_threshold`` spikes and is set to
    ``v_reset`` in the same step; it then stays at ``v_reset``, ignoring input,
    for the refractory period.

    Args:
        shape: the population shape without the batch dimension.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side, default 1.
        tau_mem: the membrane time constant in ms, above 0, default 20.0.
        v_rest: the resting potential in mV, default -65.0.
        v_reset: the reset potential in mV, below ``v_threshold``, default -65.0.
        v_threshold: the firing threshold in mV, default -50.0.
        resistance: the membrane resistance in MΩ, above 0, default 1.0, so a
            current of 1 nA moves ``v_inf`` by 1 mV.
        refractory_period: in ms, a whole number of steps, default 0.0.
        surrogate: the surrogate derivative of the spike function, default
            ``"fast_sigmoid"``.
        surrogate_slope: its steepness in 1/mV, default 1.0.
        trainable: names of parameters to train, stored per neuron as
            ``nn.Parameter`` (for example ``("tau_mem", "v_threshold")``).
        dtype: the floating point dtype, ``torch.float32`` by default.
        device: where parameters and state live.

        Each parameter in mV, ms or MΩ is a number or a tensor broadcastable
        to ``shape``, for heterogeneous populations.

    Shape:
        ``current`` (nA) and ``jump`` (mV): ``(batch_size, *shape)``; spikes:
        the same.

    Attributes:
        v: membrane potential in mV, initially ``v_rest``.
        refractory: remaining refractory steps (int32).
        threshold: ``v_threshold`` expanded to ``shape``.

    Raises:
        ValueError: for a parameter that is not finite or not broadcastable, a
            ``tau_mem`` or ``resistance`` not above 0, or ``v_reset`` not below
            ``v_threshold``.

    Examples:
        >>> import torch
        >>> lif = LIF(2, dt=1.0, tau_mem=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0)
        >>> lif.step(torch.tensor([[0.5, 2.0]]))
        tensor([[0., 1.]])
        >>> lif.v
        tensor([[0.3161, 0.0000]])
    """

    parameter_names = ("tau_mem", "v_rest", "v_reset", "v_threshold", "resistance")
    threshold_name = "v_threshold"
    state_type = LIFState
    parameters_type = LIFParameters
    step_function = staticmethod(lif_step)

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        tau_mem: ParameterValue = 20.0,
        v_rest: ParameterValue = -65.0,
        v_reset: ParameterValue = -65.0,
        v_threshold: ParameterValue = -50.0,
        resistance: ParameterValue = 1.0,
        refractory_period: ParameterValue = 0.0,
        surrogate: SurrogateName = "fast_sigmoid",
        surrogate_slope: float = DEFAULT_SLOPE,
        trainable: Collection[str] = (),
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(
            shape,
            dt=dt,
            batch_size=batch_size,
            refractory_period=refractory_period,
            surrogate=surrogate,
            surrogate_slope=surrogate_slope,
            trainable=trainable,
            dtype=dtype,
            device=device,
        )
        self._add_lif_parameters(tau_mem, v_rest, v_reset, v_threshold, resistance)
        self._register_membrane_state(lambda: self.v_rest)

    def _add_lif_parameters(
        self,
        tau_mem: ParameterValue,
        v_rest: ParameterValue,
        v_reset: ParameterValue,
        v_threshold: ParameterValue,
        resistance: ParameterValue,
    ) -> None:
        self._add_parameter("tau_mem", tau_mem, "ms", positive=True)
        self._add_parameter("v_rest", v_rest, "mV")
        self._add_parameter("v_reset", v_reset, "mV")
        self._add_parameter("v_threshold", v_threshold, "mV")
        self._add_parameter("resistance", resistance, "MΩ", positive=True)
        self._check_below("v_reset", "v_threshold")
