"""Izhikevich's simple model of spiking neurons."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from ember.neurons.base import ParameterValue, Population, check_substeps
from ember.neurons.functional import IzhikevichParameters, IzhikevichState, izhikevich_step
from ember.surrogate import DEFAULT_SLOPE, SurrogateName


class Izhikevich(Population):
    """Izhikevich neurons (Izhikevich, 2003), integrated by forward Euler.

    With ``v`` in mV, the recovery variable ``u`` in mV/ms and ``t`` in ms:

    ``dv/dt = 0.04 v^2 + 5 v + 140 - u + I / C``

    ``du/dt = a (b v - u)``

    and, when ``v >= v_peak``: ``v <- c``, ``u <- u + d``. The input current
    ``I`` is in nA and ``C`` (``capacitance``) in nF, so ``I / C`` is in mV/ms
    and, with the default ``C = 1`` nF, ``I`` takes the values of the
    original paper. Each step takes ``substeps`` forward Euler steps of
    ``dt / substeps`` on both equations. A neuron stops integrating, for the
    rest of the step, once ``v`` reaches ``v_peak``. A voltage ``jump`` is
    added after integration. During the refractory period ``v`` stays at
    ``c`` while ``u`` keeps integrating.

    The defaults are the regular-spiking cortical cell.

    Args:
        shape: the population shape without the batch dimension.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side, default 1.
        a: the rate of recovery in 1/ms, default 0.02.
        b: the sensitivity of ``u`` to ``v`` in 1/ms, default 0.2.
        c: the reset potential in mV, below ``v_peak``, default -65.0.
        d: the increase of ``u`` per spike in mV/ms, default 8.0.
        v_peak: the spike cutoff in mV, default 30.0.
        capacitance: ``C`` in nF, above 0, default 1.0.
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
        v: membrane potential in mV, initially ``c``.
        u: recovery variable in mV/ms, initially ``b * c``.
        refractory: remaining refractory steps (int32).
        threshold: ``v_peak`` expanded to ``shape``.

    Raises:
        ValueError: for a parameter that is not finite or not broadcastable,
            ``capacitance`` not above 0, ``c`` not below ``v_peak``, or
            ``substeps`` below 1.

    Examples:
        >>> import torch
        >>> neurons = Izhikevich(1, dt=0.5, substeps=2)
        >>> spikes = sum(neurons.step(torch.full((1, 1), 10.0)) for _ in range(400))
        >>> int(spikes.item())
        5
    """

    parameter_names = ("a", "b", "c", "d", "v_peak", "capacitance")
    threshold_name = "v_peak"
    state_type = IzhikevichState
    parameters_type = IzhikevichParameters
    step_function = staticmethod(izhikevich_step)

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        a: ParameterValue = 0.02,
        b: ParameterValue = 0.2,
        c: ParameterValue = -65.0,
        d: ParameterValue = 8.0,
        v_peak: ParameterValue = 30.0,
        capacitance: ParameterValue = 1.0,
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
        self._add_parameter("a", a, "1/ms")
        self._add_parameter("b", b, "1/ms")
        self._add_parameter("c", c, "mV")
        self._add_parameter("d", d, "mV/ms")
        self._add_parameter("v_peak", v_peak, "mV")
        self._add_parameter("capacitance", capacitance, "nF", positive=True)
        self._check_below("c", "v_peak")
        self._register_membrane_state(lambda: self.c)
        self.register_state("u", self.shape, lambda: self.b * self.c)

    def extra_settings(self) -> tuple[str, ...]:
        return super().extra_settings() + ("substeps",)
