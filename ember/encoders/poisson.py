"""Poisson rate coding: each unit fires as a Poisson process at its rate in Hz."""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import torch

from ember.core import Shape
from ember.encoders.base import Encoder

PoissonMode = Literal["bernoulli", "exact"]
SaturationPolicy = Literal["warn", "clip", "raise"]


class RateSaturationWarning(RuntimeWarning):
    """Warns that a requested rate is above 1/dt, the most one spike per step can give."""


class PoissonEncoder(Encoder):
    """Encodes rates in Hz as Poisson spike trains, at most one spike per step.

    Two modes draw the spikes:

    - ``"bernoulli"``: each unit spikes in each step with probability
      ``p = rate * dt / 1000`` (rate in Hz, dt in ms), independently of the
      other steps. The mean rate is exactly ``rate`` while ``rate <= 1000 / dt``
      and the inter-spike intervals are geometric.
    - ``"exact"``: each unit follows a continuous-time Poisson process by time
      rescaling. Its state ``budget`` is the integrated intensity left until
      its next event. Each step subtracts ``rate * dt / 1000``. The unit
      spikes when the budget reaches 0, and then a fresh Exp(1) draw is added. A rate
      that changes between steps is followed exactly. When two events fall
      into one step, the second is emitted in the next step instead, so
      every event is emitted and the mean rate is exactly ``rate`` while
      ``rate < 1000 / dt``; the price is that intervals shorter than one step
      are lengthened.

    Rates above ``1000 / dt`` Hz cannot be represented with one spike per step.
    In ``"bernoulli"`` mode ``p`` is clipped to 1, so the unit fires every step
    and its rate saturates at ``1000 / dt``. In ``"exact"`` mode the unit also
    fires every step, and the postponed events pile up at ``rate * dt / 1000 - 1``
    per step: after the rate drops, the unit keeps firing every step until the
    backlog is emitted, unless the presentation is restarted
    (:meth:`restart`, ``reset_state()`` or a new ``set_data()`` of the source).
    ``saturation`` chooses whether such rates warn, pass silently or raise.

    Args:
        dt: the step length in ms.
        mode: ``"bernoulli"`` (default) or ``"exact"``, see above.
        saturation: what a rate above ``1000 / dt`` Hz does: ``"warn"``
            (default) issues a :class:`RateSaturationWarning` once per new
            intensity tensor, ``"clip"`` saturates silently, ``"raise"``
            raises ``ValueError``.
        batch_size: the number of samples encoded side by side. Default 1.
        dtype: the dtype of the spikes and of the budget state.
        device: where the state lives.

    Shape:
        - x: ``(B, *shape)``, rates in Hz, at least 0.
        - output: ``(B, *shape)``, 0.0 or 1.0.

    Examples:
        >>> encoder = PoissonEncoder(dt=1.0)
        >>> spikes = encoder.encode(torch.full((2, 100), 50.0), steps=1000, seed=7)
        >>> spikes.shape
        torch.Size([1000, 2, 100])
    """

    def __init__(
        self,
        *,
        dt: float,
        mode: PoissonMode = "bernoulli",
        saturation: SaturationPolicy = "warn",
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        if mode not in get_args(PoissonMode):
            raise ValueError(f"mode must be one of {get_args(PoissonMode)}, got {mode!r}")
        if saturation not in get_args(SaturationPolicy):
            raise ValueError(f"saturation must be one of {get_args(SaturationPolicy)}, got {saturation!r}")
        self.mode: PoissonMode = mode
        self.saturation: SaturationPolicy = saturation

    @property
    def max_rate_hz(self) -> float:
        """The highest rate one spike per step can give, ``1000 / dt`` Hz."""
        return 1000.0 / self.dt

    def _register_unit_states(self, shape: Shape) -> None:
        if self.mode != "exact":
            return
        # NaN marks a unit whose first event has not been drawn yet; the draw
        # needs the step's generator, so it happens in the first step.
        self.register_state("budget", shape, float("nan"))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if torch.isnan(x).any():
            raise ValueError("rates must not be NaN; check the input data")
        low = float(x.min())
        if low < 0.0:
            raise ValueError(f"rates must be at least 0 Hz, got a minimum of {low} Hz")
        high = float(x.max())
        if high > self.max_rate_hz:
            self._report_saturation(high)
        return x * (self.dt / 1000.0)

    def _report_saturation(self, high: float) -> None:
        message = (
            f"a rate of {high} Hz is above 1000 / dt = {self.max_rate_hz} Hz; with at most one spike "
            f"per step of {self.dt} ms the {self.mode!r} Poisson encoder saturates at {self.max_rate_hz} Hz"
        )
        if self.saturation == "raise":
            raise ValueError(f"{message}. Lower the rates or the step length dt")
        if self.saturation == "warn":
            warnings.warn(
                f"{message}. Lower the rates or dt, or pass saturation='clip' to accept it silently",
                RateSaturationWarning,
                stacklevel=5,
            )

    def _emit(self, expected: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            raise ValueError("PoissonEncoder.step needs a torch.Generator; pass ember.random.step_generator(...)")
        if self.mode == "bernoulli":
            return self._emit_bernoulli(expected, generator)
        return self._emit_exact(expected, generator)

    def _emit_bernoulli(self, probability: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        uniform = torch.rand(probability.shape, generator=generator, device=self.device, dtype=self.dtype)
        return (uniform < probability.clamp(max=1.0)).to(self.dtype)

    def _emit_exact(self, intensity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Two Exp(1) draws per unit: one starts a new presentation, one follows a spike.
        draws = torch.empty((2, *intensity.shape), device=self.device, dtype=self.dtype)
        draws.exponential_(generator=generator)

        budget = torch.where(torch.isnan(self.budget), draws[0], self.budget)

        budget = budget - intensity
        spikes = budget <= 0.0

        self.budget = torch.where(spikes, budget + draws[1], budget)
        return spikes.to(self.dtype)

    def extra_repr(self) -> str:
        settings = [f"dt={self.dt}"]
        if self.mode != "bernoulli":
            settings.append(f"mode={self.mode!r}")
        if self.saturation != "warn":
            settings.append(f"saturation={self.saturation!r}")
        return ", ".join(settings)
