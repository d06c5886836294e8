"""Leaky integrate-and-fire neurons with a spike-triggered adaptive threshold."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from ember.neurons.base import ParameterValue
from ember.neurons.functional import AdaptiveLIFParameters, AdaptiveLIFState, adaptive_lif_step
from ember.neurons.lif import LIF
from ember.surrogate import DEFAULT_SLOPE, SurrogateName


class AdaptiveLIF(LIF):
    """LIF neurons whose threshold rises by ``theta_plus`` with every spike and relaxes back.

    The membrane follows :class:`LIF` exactly, but fires at the effective
    threshold ``v_threshold + theta``. The increase ``theta`` (mV) follows

    ``tau_theta dtheta/dt = -theta``, plus ``theta_plus`` at each spike,

    integrated exactly: each step first multiplies ``theta`` by
    ``exp(-dt / tau_theta)``, tests the threshold with it, then adds
    ``theta_plus`` for each spike of the step. This is the homeostatic
    threshold of Diehl and Cook (2015), whose values are the defaults.

    Args:
        shape, dt, batch_size, tau_mem, v_rest, v_reset, v_threshold,
            resistance, refractory_period, surrogate, surrogate_slope,
            trainable, dtype, device: as for :class:`LIF`.
        theta_plus: the threshold increase per spike in mV, at least 0,
            default 0.05.
        tau_theta: the time constant of the decay of ``theta`` in ms, above 0,
            default 1e7.
        theta_shared: if true (default), one ``theta`` per neuron, shared by
            the samples of the batch. It rises by ``theta_plus`` times the
            fraction of samples in which the neuron spiked, carries no
            gradient, and is a buffer that :meth:`reset_state` keeps, so that
            it is learned across samples; :meth:`reset_parameters` zeroes it.
            If false, ``theta`` is per-sample state that :meth:`reset_state`
            zeroes.
        adapt: whether ``theta`` changes, default true. Set the attribute to
            false to freeze ``theta`` (for example for evaluation).

    Attributes:
        theta: the threshold increase in mV, shape ``shape`` when shared,
            otherwise ``(batch_size, *shape)``; initially 0.
        threshold: ``v_threshold + theta``, shape of ``theta``.
        adapt: see above.

    Raises:
        ValueError: as for :class:`LIF`, and for ``theta_plus`` below 0 or
            ``tau_theta`` not above 0.

    Examples:
        >>> import torch
        >>> neurons = AdaptiveLIF(1, dt=1.0, tau_mem=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0, theta_plus=0.5)
        >>> neurons.step(torch.tensor([[5.0]]))
        tensor([[1.]])
        >>> neurons.threshold
        tensor([1.5000])
    """

    parameter_names = LIF.parameter_names + ("theta_plus", "tau_theta")
    state_type = AdaptiveLIFState
    parameters_type = AdaptiveLIFParameters
    step_function = staticmethod(adaptive_lif_step)

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
        theta_plus: ParameterValue = 0.05,
        tau_theta: ParameterValue = 1e7,
        theta_shared: bool = True,
        adapt: bool = True,
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
            tau_mem=tau_mem,
            v_rest=v_rest,
            v_reset=v_reset,
            v_threshold=v_threshold,
            resistance=resistance,
            refractory_period=refractory_period,
            surrogate=surrogate,
            surrogate_slope=surrogate_slope,
            trainable=trainable,
            dtype=dtype,
            device=device,
        )
        self._add_parameter("theta_plus", theta_plus, "mV")
        if not bool((self.theta_plus >= 0).all()):
            raise ValueError(f"theta_plus must be at least 0 mV, got {theta_plus!r}")
        self._add_parameter("tau_theta", tau_theta, "ms", positive=True)
        self.theta_shared = bool(theta_shared)
        self.adapt = bool(adapt)
        if self.theta_shared:
            self.register_buffer("theta", torch.zeros(self.shape, dtype=self.dtype, device=self.device))
        else:
            self.register_state("theta", self.shape, 0.0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the shared threshold increase ``theta``; per-sample ``theta`` is state, reset by ``reset_state``."""
        if self.theta_shared:
            self.theta = torch.zeros_like(self.theta)

    @property
    def threshold(self) -> torch.Tensor:
        """The effective threshold ``v_threshold + theta`` in mV."""
        return self.v_threshold + self.theta

    def extra_settings(self) -> tuple[str, ...]:
        return super().extra_settings() + ("theta_shared", "adapt")
