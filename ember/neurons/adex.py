"""Adaptive exponential integrate-and-fire neurons."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from ember.neurons.base import ParameterValue, Population, check_substeps
from ember.neurons.eif import add_exponential_parameters, check_exponent_range
from ember.neurons.functional import AdExParameters, AdExState, adex_step
from ember.surrogate import DEFAULT_SLOPE, SurrogateName


class AdEx(Population):
    """Adaptive exponential integrate-and-fire neurons (Brette and Gerstner, 2005), by forward Euler.

    With ``v`` in mV, the adaptation current ``w`` in nA and ``t`` in ms:

    ``tau_mem dv/dt = -(v - v_rest) + sharpness exp((v - v_rheobase) / sharpness) - R w + R I``

    ``tau_w dw/dt = a (v - v_rest) - w``

    and, when ``v >= v_peak``: ``v <- v_reset``, ``w <- w + b``. Here ``I`` is
    in nA, ``R`` (``resistance``) in MΩ and ``a`` in µS. Each step takes
    ``substeps`` forward Euler steps of ``dt / substeps`` on both equations. A
    neuron stops integrating, for the rest of the step, once ``v`` reaches
    ``v_peak``. A voltage ``jump`` is added after integration. During the
    refractory period ``v`` stays at ``v_reset`` while ``w`` keeps integrating.

    The defaults are the cell of Brette and Gerstner (2005): C = 281 pF and
    g_L = 30 nS give ``tau_mem = C / g_L = 9.37`` ms and
    ``R = 1 / g_L = 33.3`` MΩ; ``a`` = 4 nS, ``b`` = 80.5 pA, ``tau_w`` = 144 ms.

    Args:
        shape: the population shape without the batch dimension.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side, default 1.
        tau_mem: the membrane time constant in ms, above 0, default 9.37.
        v_rest: the resting potential in mV, default -70.6.
        v_rheobase: the rheobase threshold in mV, default -50.4.
        sharpness: the slope factor of spike initiation in mV, above 0,
            default 2.0.
        resistance: the membrane resistance in MΩ, above 0, default 33.3.
        v_reset: the reset potential in mV, below ``v_peak``, default -70.6.
        v_peak: the spike cutoff in mV, default 20.0. At most 60 ``sharpness``
            above ``v_rheobase``.
        a: the subthreshold adaptation conductance in µS, default 0.004.
        b: the increase of ``w`` per spike in nA, default 0.0805.
        tau_w: the adaptation time constant in ms, above 0, default 144.0.
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
        w: adaptation current in nA, initially 0.
        refractory: remaining refractory steps (int32).
        threshold: ``v_peak`` expanded to ``shape``.

    Raises:
        ValueError: for a parameter that is not finite or not broadcastable,
            ``tau_mem``, ``sharpness``, ``resistance`` or ``tau_w`` not above 0,
            ``v_reset`` not below ``v_peak``, ``v_peak`` too far above
            ``v_rheobase``, or ``substeps`` below 1.

    Examples:
        >>> import torch
        >>> neurons = AdEx(1, dt=0.1)
        >>> spikes = sum(neurons.step(torch.full((1, 1), 1.0)) for _ in range(1000))
        >>> int(spikes.item()), round(neurons.w.item(), 2)
        (5, 0.31)
    """

    parameter_names = (
        "tau_mem", "v_rest", "v_rheobase", "sharpness", "resistance", "v_reset", "v_peak", "a", "b", "tau_w",
    )  # fmt: skip
    threshold_name = "v_peak"
    state_type = AdExState
    parameters_type = AdExParameters
    step_function = staticmethod(adex_step)

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        tau_mem: ParameterValue = 9.37,
        v_rest: ParameterValue = -70.6,
        v_rheobase: ParameterValue = -50.4,
        sharpness: ParameterValue = 2.0,
        resistance: ParameterValue = 33.3,
        v_reset: ParameterValue = -70.6,
        v_peak: ParameterValue = 20.0,
        a: ParameterValue = 0.004,
        b: ParameterValue = 0.0805,
        tau_w: ParameterValue = 144.0,
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
        add_exponential_parameters(self, v_rheobase, sharpness)
        self._add_parameter("resistance", resistance, "MΩ", positive=True)
        self._add_parameter("v_reset", v_reset, "mV")
        self._add_parameter("v_peak", v_peak, "mV")
        self._add_parameter("a", a, "µS")
        self._add_parameter("b", b, "nA")
        self._add_parameter("tau_w", tau_w, "ms", positive=True)
        self._check_below("v_reset", "v_peak")
        check_exponent_range(self)
        self._register_membrane_state(lambda: self.v_rest)
        self.register_state("w", self.shape, 0.0)

    def extra_settings(self) -> tuple[str, ...]:
        return super().extra_settings() + ("substeps",)
