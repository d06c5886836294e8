"""Quadratic integrate-and-fire neurons."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from ember.neurons.base import ParameterValue, Population, check_substeps
from ember.neurons.functional import QIFParameters, QIFState, qif_step
from ember.surrogate import DEFAULT_SLOPE, SurrogateName


class QIF(Population):
    """Quadratic integrate-and-fire neurons, integrated by forward Euler.

    The membrane potential ``v`` (mV) follows

    ``tau_mem dv/dt = curvature (v - v_rest) (v - v_critical) + R I``

    with ``I`` in nA and ``R`` (``resistance``) in MΩ. Without input,
    ``v_rest`` is the stable fixed point and ``v_critical`` the unstable one:
    above it ``v`` diverges in finite time, and the neuron spikes when ``v``
    reaches ``v_peak``, then ``v <- v_reset``. Each step takes ``substeps``
    forward Euler steps of ``dt / substeps``. A neuron stops integrating, for
    the rest of the step, once ``v`` reaches ``v_peak``. A voltage ``jump`` is
    added after integration.

    Args:
        shape: the population shape without the batch dimension.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side, default 1.
        tau_mem: the membrane time constant in ms, above 0, default 10.0.
        v_rest: the resting potential in mV, default -65.0.
        v_critical: the critical potential in mV, above ``v_rest``, default -50.0.
        curvature: the factor of the quadratic term in 1/mV, above 0, default 0.04.
        resistance: the membrane resistance in MΩ, above 0, default 1.0.
        v_reset: the reset potential in mV, below ``v_peak``, default -65.0.
        v_peak: the spike cutoff in mV, default 0.0.
        substeps: forward Euler steps per step, at least 1, default 1.
        refractory_period: in ms, a whole number of steps, default 0.0.
        surrogate: the surrogate derivative of the spike function, default
            ``"fast_sigmoid"``.
        surrogate_slope: its steepness in 1/mV, default 1.0.
        trainable: names of parameters to store per neuron as ``nn.Parameter``.
        dtype: the floating point dtype, ``torch.float32`` by default.
        device: where parameters and state live.

        Each parameter is a number or a tensor broadcastable to ``shape``.

    Shape:
        ``current`` (nA) and ``jump`` (mV): ``(batch_size, *shape)``; spikes:
        the same.

    Attributes:
        v: membrane potential in mV, initially ``v_rest``.
        refractory: remaining refractory steps (int32).
        threshold: ``v_peak`` expanded to ``shape``.

    Raises:
        ValueError: for a parameter that is not finite or not broadcastable,
            ``tau_mem``, ``curvature`` or ``resistance`` not above 0,
            ``v_rest`` not below ``v_critical``, ``v_reset`` not below
            ``v_peak``, or ``substeps`` below 1.

    Examples:
        >>> neurons = QIF(1, dt=1.0, v_rest=0.0, v_critical=10.0, curvature=0.1, v_reset=0.0, v_peak=30.0)
        >>> neurons.v = neurons.v + 20.0
        >>> neurons.step(None)  # v = 20 + (0.1 * 20 * 10) / 10
        tensor([[0.]])
        >>> neurons.v
        tensor([[22.]])
    """

    parameter_names = ("tau_mem", "v_rest", "v_critical", "curvature", "resistance", "v_reset", "v_peak")
    threshold_name = "v_peak"
    state_type = QIFState
    parameters_type = QIFParameters
    step_function = staticmethod(qif_step)

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        tau_mem: ParameterValue = 10.0,
        v_rest: ParameterValue = -65.0,
        v_critical: ParameterValue = -50.0,
        curvature: ParameterValue = 0.04,
        resistance: ParameterValue = 1.0,
        v_reset: ParameterValue = -65.0,
        v_peak: ParameterValue = 0.0,
        substeps: int = 1,
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
        self.substeps = check_substeps(substeps)
        self._add_parameter("tau_mem", tau_mem, "ms", positive=True)
        self._add_parameter("v_rest", v_rest, "mV")
        self._add_parameter("v_critical", v_critical, "mV")
        self._add_parameter("curvature", curvature, "1/mV", positive=True)
        self._add_parameter("resistance", resistance, "MΩ", positive=True)
        self._add_parameter("v_reset", v_reset, "mV")
        self._add_parameter("v_peak", v_peak, "mV")
        self._check_below("v_rest", "v_critical")
        self._check_below("v_reset", "v_peak")
        self._register_membrane_state(lambda: self.v_rest)

    def extra_settings(self) -> tuple[str, ...]:
        return super().extra_settings() + ("substeps",)
