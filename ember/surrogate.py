"""The spike nonlinearity with a surrogate derivative for gradient training.

Forward, :func:`spike` is the Heaviside step of ``x = v - threshold`` (mV): 1.0
where ``x >= 0``, else 0.0. Its true derivative is zero almost everywhere, so
the backward pass uses a smooth stand-in instead. Every surrogate derivative
below peaks at 1 for ``x = 0`` and falls off over about ``1 / slope`` mV:

- ``"fast_sigmoid"``: ``1 / (1 + slope * |x|) ** 2``, the derivative of the
  fast sigmoid ``x / (1 + |x|)`` used by SuperSpike (Zenke and Ganguli, 2018).
- ``"arctan"``: ``1 / (1 + (slope * x) ** 2)``, the derivative of
  ``arctan(slope * x) / slope``.
- ``"triangle"``: ``max(0, 1 - slope * |x|)``, zero beyond ``1 / slope`` mV.

Examples:
    >>> import torch
    >>> x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    >>> spike(x)
    tensor([0., 1., 1.], grad_fn=<SpikeFunctionBackward>)
    >>> spike(x, "triangle", slope=0.5).sum().backward()
    >>> x.grad
    tensor([0.5000, 1.0000, 0.0000])
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch

SurrogateName = Literal["fast_sigmoid", "arctan", "triangle"]

#: The valid values of the ``surrogate`` argument.
SURROGATES: tuple[str, ...] = get_args(SurrogateName)

#: The default steepness of the surrogate derivative, in 1/mV.
DEFAULT_SLOPE = 1.0


def check_surrogate(surrogate: str, slope: float) -> tuple[str, float]:
    """Validate a surrogate choice and its slope, and return them.

    Raises:
        ValueError: if ``surrogate`` is not one of :data:`SURROGATES`, or
            ``slope`` is not a finite number above 0.
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(map(repr, SURROGATES))}, got {surrogate!r}")
    slope = float(slope)
    if not math.isfinite(slope) or slope <= 0.0:
        raise ValueError(f"surrogate slope must be a finite number above 0 (1/mV), got {slope!r}")
    return surrogate, slope


def surrogate_derivative(x: torch.Tensor, surrogate: SurrogateName, slope: float) -> torch.Tensor:
    """Evaluate the surrogate derivative of the spike function at ``x`` (mV).

    Args:
        x: distance of the membrane potential from threshold, mV, any shape.
        surrogate: which derivative, one of :data:`SURROGATES`.
        slope: the steepness in 1/mV.

    Returns:
        A tensor like ``x``, equal to 1 at ``x = 0``.
    """
    scaled = slope * x
    if surrogate == "fast_sigmoid":
        return 1.0 / (1.0 + scaled.abs()) ** 2
    if surrogate == "arctan":
        return 1.0 / (1.0 + scaled**2)
    return torch.clamp(1.0 - scaled.abs(), min=0.0)


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, surrogate derivative backward."""

    @staticmethod
    def forward(x: torch.Tensor, surrogate: SurrogateName, slope: float) -> torch.Tensor:  # type: ignore[override]
        return (x >= 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, surrogate, slope = inputs
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        ctx.slope = slope

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * surrogate_derivative(x, ctx.surrogate, ctx.slope), None, None


def spike(x: torch.Tensor, surrogate: SurrogateName = "fast_sigmoid", slope: float = DEFAULT_SLOPE) -> torch.Tensor:
    """Return 1.0 where ``x >= 0`` and 0.0 elsewhere, with a surrogate gradient.

    Args:
        x: the membrane potential minus the threshold, mV, any shape.
        surrogate: the derivative used by autograd, one of ``"fast_sigmoid"``
            (default), ``"arctan"`` and ``"triangle"`` (see the module docstring).
        slope: the steepness of the surrogate derivative in 1/mV, default 1.0.

    Returns:
        A tensor of the shape and dtype of ``x``, 0.0 or 1.0.

    Raises:
        ValueError: for an unknown ``surrogate`` or a slope that is not above 0.
    """
    surrogate, slope = check_surrogate(surrogate, slope)
    if not (torch.is_grad_enabled() and x.requires_grad):
        # Without autograd the Heaviside step alone is needed; this skips the
        # per-call overhead of torch.autograd.Function.apply.
        return (x >= 0).to(x.dtype)
    return SpikeFunction.apply(x, surrogate, slope)
