"""Conversion of durations in ms to whole or fractional simulation steps.

Step ``t`` covers the interval ``(t * dt, (t + 1) * dt]`` with ``dt`` in ms. A
duration of ``x`` ms is ``x / dt`` steps, rounded so that floating point error
cannot drop a step: 0.3 ms at dt = 0.1 ms is 3 steps, although
``0.3 / 0.1 == 2.9999999999999996``.
"""

from __future__ import annotations

import math

import torch

#: Relative tolerance under which ``x / dt`` counts as a whole number of steps.
STEP_RTOL = 1e-6


def check_dt(dt: float) -> float:
    """Validate a step length ``dt`` in ms and return it as a float.

    Raises:
        ValueError: if ``dt`` is not a finite number above zero.
    """
    dt = float(dt)
    if not math.isfinite(dt) or dt <= 0.0:
        raise ValueError(f"dt must be a finite step length above 0 ms, got {dt!r} ms")
    return dt


def to_steps(duration_ms: float, dt: float, *, name: str = "duration") -> int:
    """Convert a duration in ms to a whole number of steps.

    Args:
        duration_ms: the duration in ms, at least 0.
        dt: the step length in ms.
        name: what the duration is, for the error message (for example
            ``"refractory period"``).

    Returns:
        ``round(duration_ms / dt)``.

    Raises:
        ValueError: if the duration is negative, or is not a whole number of
            steps within a relative tolerance of 1e-6.

    Examples:
        >>> to_steps(0.3, 0.1)
        3
        >>> to_steps(2.0, 0.05, name="refractory period")
        40
    """
    dt = check_dt(dt)
    duration_ms = float(duration_ms)
    if not math.isfinite(duration_ms) or duration_ms < 0.0:
        raise ValueError(f"{name} must be a finite duration of at least 0 ms, got {duration_ms!r} ms")
    ratio = duration_ms / dt
    steps = round(ratio)
    if abs(ratio - steps) > STEP_RTOL * max(1.0, abs(ratio)):
        raise ValueError(
            f"{name} of {duration_ms} ms is not a whole number of steps at dt = {dt} ms "
            f"({ratio:.6g} steps); choose a multiple of dt"
        )
    return int(steps)


def to_fractional_steps(duration_ms: torch.Tensor, dt: float) -> torch.Tensor:
    """Convert durations in ms to fractional steps, snapping near-whole values.

    A value within a relative tolerance of 1e-6 of a whole number of steps
    becomes that whole number, so that 0.3 ms at dt = 0.1 ms is exactly 3
    steps. The snap keeps the autograd graph: its gradient is that of
    ``duration_ms / dt``.

    Args:
        duration_ms: durations in ms, any shape.
        dt: the step length in ms.

    Returns:
        A tensor of the same shape and dtype, in steps.
    """
    dt = check_dt(dt)
    steps = duration_ms / dt
    nearest = torch.round(steps)
    tolerance = STEP_RTOL * torch.clamp(nearest.abs(), min=1.0)
    snap = (steps - nearest).abs() <= tolerance
    # Add the rounding error as a constant so the gradient is unchanged.
    correction = torch.where(snap, (nearest - steps).detach(), torch.zeros_like(steps))
    return steps + correction
