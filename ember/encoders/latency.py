"""Latency (time-to-first-spike) coding: stronger inputs fire earlier, once."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

from ember.encoders.base import Encoder
from ember.units import STEP_RTOL, to_steps

LatencyMapping = Literal["linear", "log"]


def check_unit_interval(x: torch.Tensor, *, encoder: str) -> None:
    """Raise ``ValueError`` unless every intensity is in [0, 1]."""
    if torch.isnan(x).any():
        raise ValueError(f"{encoder} intensities must not be NaN; check the input data")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{encoder} intensities must be in [0, 1], got values from {low} to {high}; "
            "scale the data first, for example divide 8-bit pixels by 255"
        )


def snap_floor(steps: torch.Tensor) -> torch.Tensor:
    """Floor fractional steps, first snapping values within 1e-6 relative of a whole step.

    The snap keeps rounding error from moving a spike one step early:
    ``(1 - 0.9) * 10`` is ``0.9999999999999998`` in float64 and must give step 1.
    """
    nearest = torch.round(steps)
    tolerance = STEP_RTOL * torch.clamp(nearest.abs(), min=1.0)
    snapped = torch.where((steps - nearest).abs() <= tolerance, nearest, steps)
    return torch.floor(snapped)


class LatencyEncoder(Encoder):
    """Encodes intensities in [0, 1] as the time of one spike per unit.

    The window of ``n = window_ms / dt`` steps starts when the presentation
    starts. Intensity ``x`` becomes a delay fraction ``f`` in [0, 1], and the
    unit fires once, at step ``floor(f * n)``, clipped to ``n - 1`` so that
    every spike falls inside the window:

    - ``"linear"``: ``f = 1 - x``.
    - ``"log"``: ``f = ln(x) / ln(log_floor)``, so ``f`` is 0 at ``x = 1`` and
      1 at ``x = log_floor``; intensities below ``log_floor`` fire at the last
      step of the window. The mapping spreads the strong intensities over
      more of the window than the linear one does.

    Intensity 1 fires at step 0 and intensity 0 never fires. The spike step
    never increases with intensity, so a stronger input never fires later
    than a weaker one. Steps count from the start of the presentation
    (see :class:`~ember.encoders.base.Encoder`).

    Args:
        dt: the step length in ms.
        window_ms: the length of the coding window in ms, a whole number of
            steps, at least one step.
        mapping: ``"linear"`` (default) or ``"log"``.
        log_floor: the intensity that fires at the end of the window under
            the ``"log"`` mapping, in (0, 1). Default 0.01.
        batch_size: the number of samples encoded side by side. Default 1.
        dtype: the dtype of the spikes.
        device: where the state lives.

    Shape:
        - x: ``(B, *shape)``, intensities in [0, 1].
        - output: ``(B, *shape)``, 0.0 or 1.0.

    Examples:
        >>> encoder = LatencyEncoder(dt=1.0, window_ms=10.0)
        >>> spikes = encoder.encode(torch.tensor([[1.0, 0.5, 0.0]]), steps=10)
        >>> spikes[:, 0].nonzero().tolist()
        [[0, 0], [5, 1]]
    """

    def __init__(
        self,
        *,
        dt: float,
        window_ms: float,
        mapping: LatencyMapping = "linear",
        log_floor: float = 0.01,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        if mapping not in get_args(LatencyMapping):
            raise ValueError(f"mapping must be one of {get_args(LatencyMapping)}, got {mapping!r}")
        log_floor = float(log_floor)
        if not 0.0 < log_floor < 1.0:
            raise ValueError(f"log_floor must be in (0, 1), got {log_floor!r}")
        self.window_ms = float(window_ms)
        self.window_steps = to_steps(self.window_ms, self.dt, name="window_ms")
        if self.window_steps < 1:
            raise ValueError(f"window_ms must be at least one step of {self.dt} ms, got {window_ms!r} ms")
        self.mapping: LatencyMapping = mapping
        self.log_floor = log_floor

    def spike_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Return the step of each unit's spike, or -1 for units that never fire.

        Args:
            x: intensities in [0, 1], any shape.

        Returns:
            An int64 tensor of the shape of ``x``.
        """
        check_unit_interval(x, encoder=type(self).__name__)
        x = x.to(torch.float64)
        if self.mapping == "linear":
            fraction = 1.0 - x
        else:
            # x = 0 gives inf here; those units are masked out below.
            fraction = (torch.log(x) / math.log(self.log_floor)).clamp(max=1.0)
        steps = snap_floor(fraction * self.window_steps).clamp(max=self.window_steps - 1)
        return torch.where(x > 0.0, steps, torch.full_like(steps, -1.0)).to(torch.int64)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.spike_steps(x)

    def _emit(self, spike_steps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (spike_steps == self.elapsed).to(self.dtype)

    def extra_repr(self) -> str:
        settings = [f"dt={self.dt}", f"window_ms={self.window_ms}"]
        if self.mapping != "linear":
            settings.append(f"mapping={self.mapping!r}, log_floor={self.log_floor}")
        return ", ".join(settings)
