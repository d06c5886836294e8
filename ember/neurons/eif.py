"""Exponential integrate-and-fire neurons."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from ember.neurons.base import ParameterValue, Population, check_substeps
from ember.neurons.functional import EIFParameters, EIFState, eif_step
from ember.surrogate import DEFAULT_SLOPE, SurrogateName

#: The largest allowed ``(v_peak - v_rheobase) / sharpness``: the exponential
#: term stays far below the float32 limit (exp(88.7)) on the way to ``v_peak``.
MAX_EXPONENT = 60.0


def add_exponential_parameters(population: Population, v_rheobase: ParameterValue, sharpness: ParameterValue) -> None:
    """Register ``v_rheobase`` (mV) and ``sharpness`` (mV, above 0) on an EIF or AdEx population."""
    population._add_parameter("v_rheobase", v_rheobase, "mV")
    population._add_parameter("sharpness", sharpness, "mV", positive=True)


def check_exponent_range(population: Population) -> None:
    """Raise ValueError if ``exp((v - v_rheobase) / sharpness)`` could overflow below ``v_peak``."""
    exponent = (population.v_peak - population.v_rheobase) / population.sharpness
    if not bool((exponent <= MAX_EXPONENT).all()):
        raise ValueError(
            f"v_peak may be at most {MAX_EXPONENT:g} * sharpness above v_rheobase, or the exponential term "
            f"overflows; got (v_peak - v_rheobase) / sharpness up to {exponent.max().item():g}. "
            f"Lower v_peak or raise sharpness"
        )


class EIF(Population):
    """Exponential integrate-and-fire neurons (Fourcaud-Trocmé et al., 2003), integrated by forward Euler.

    The membrane potential ``v`` (mV) follows

    ``tau_mem dv/dt = -(v - v_rest) + sharpness exp((v - v_rheobase) / sharpness) + R I``

    with ``I`` in nA and ``R`` (``resistance``) in MΩ. Above ``v_rheobase``
    the exponential term takes over and ``v`` diverges; the neuron spikes when
    ``v`` reaches ``v_peak``, then ``v <- v_reset``. Each step takes
    ``substeps`` forward Euler steps of ``dt / substeps``. A neuron stops
    integrating, for the rest of the step, once ``v`` reaches ``v_peak``. A
    voltage ``jump`` is added after integration.

    Args:
        shape: the population shape without the batch dimension.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side, default 1.
        tau_mem: the membrane time constant in ms, above 0, default 10.0.
        v_rest: the resting potential in mV, default -65.0.
        v_rheobase: the rheobase threshold in mV, default -50.0.
        sharpness: the slope factor of spike initiation in mV, above 0,
            default 2.0.
        resistance: the membrane resistance in MΩ, above 0, default 1.0.
        v_reset: the reset potential in mV, below ``v_peak``, default -65.0.
        v_peak: the spike cutoff in mV, default 0.0. At most 60 ``sharpness``
            above ``v_rheobase``.
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
            ``tau_mem``, ``sharpness`` or ``resistance`` not above 0,
            ``v_reset`` not below ``v_peak``, ``v_peak`` too far above
            ``v_rheobase``, or ``substeps`` below 1.

    Examples:
        >>> neurons = EIF(1, dt=1.0, v_rest=0.0, v_rheobase=0.0, sharpness=1.0, v_reset=-1.0, v_peak=10.0)
        >>> neurons.step(None)  # dv = exp(0) / 10 per ms
        tensor([[0.]])
        >>> neurons.v
        tensor([[0.1000]])
    """

    parameter_names = ("tau_mem", "v_rest", "v_rheobase", "sharpness", "resistance", "v_reset", "v_peak")
    threshold_name = "v_peak"
    state_type = EIFState
    parameters_type = EIFParameters
    step_function = staticmethod(eif_step)

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        tau_mem: ParameterValue = 10.0,
        v_rest: ParameterValue = -65.0,
        v_rheobase: ParameterValue = -50.0,
        sharpness: ParameterValue = 2.0,
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
        add_exponential_parameters(self, v_rheobase, sharpness)
        self._add_parameter("resistance", resistance, "MΩ", positive=True)
        self._add_parameter("v_reset", v_reset, "mV")
        self._add_parameter("v_peak", v_peak, "mV")
        self._check_below("v_reset", "v_peak")
        check_exponent_range(self)
        self._register_membrane_state(lambda: self.v_rest)

    def extra_settings(self) -> tuple[str, ...]:
        return super().extra_settings() + ("substeps",)
