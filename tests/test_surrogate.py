"""The spike function: Heaviside forward and the surrogate derivatives backward."""

from __future__ import annotations

import pytest
import torch

from ember.surrogate import SURROGATES, spike, surrogate_derivative

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]

POINTS = [-1.0, -0.25, 0.0, 0.5, 2.0]

# Closed-form derivatives at POINTS for slope = 2 per mV.
EXPECTED_AT_SLOPE_2 = {
    "fast_sigmoid": [1 / 9, 1 / 2.25, 1.0, 1 / 4, 1 / 25],  # 1 / (1 + 2|x|)^2
    "arctan": [1 / 5, 1 / 1.25, 1.0, 1 / 2, 1 / 17],  # 1 / (1 + (2x)^2)
    "triangle": [0.0, 0.5, 1.0, 0.0, 0.0],  # max(0, 1 - 2|x|)
}


def primitive(x: torch.Tensor, surrogate: str, slope: float) -> torch.Tensor:
    """A smooth function whose derivative is the surrogate derivative."""
    if surrogate == "fast_sigmoid":
        return x / (1 + slope * x.abs())
    if surrogate == "arctan":
        return torch.atan(slope * x) / slope
    inside = x - slope * x * x.abs() / 2
    return torch.where(x.abs() < 1 / slope, inside, torch.sign(x) / (2 * slope))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_forward_is_heaviside(surrogate: str, device: str) -> None:
    x = torch.tensor([-3.0, -1e-6, 0.0, 1e-6, 5.0], device=device)
    assert spike(x, surrogate).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_keeps_dtype_and_shape(dtype: torch.dtype) -> None:
    x = torch.zeros(2, 3, 4, dtype=dtype)
    out = spike(x)
    assert out.dtype == dtype
    assert out.shape == (2, 3, 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_gradient_values_at_points(surrogate: str, device: str) -> None:
    x = torch.tensor(POINTS, dtype=torch.float64, device=device, requires_grad=True)
    spike(x, surrogate, slope=2.0).sum().backward()
    expected = torch.tensor(EXPECTED_AT_SLOPE_2[surrogate], dtype=torch.float64, device=device)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_gradient_scales_upstream_gradient(surrogate: str) -> None:
    x = torch.tensor(POINTS, dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0], dtype=torch.float64)
    spike(x, surrogate, slope=2.0).backward(upstream)
    expected = upstream * torch.tensor(EXPECTED_AT_SLOPE_2[surrogate], dtype=torch.float64)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("slope", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_gradient_is_derivative_of_primitive(surrogate: str, slope: float) -> None:
    # Points away from the kinks of the triangle at |x| = 1 / slope and 0.
    x = torch.linspace(-4.0, 4.0, 41, dtype=torch.float64) + 0.013
    x_spike = x.clone().requires_grad_(True)
    spike(x_spike, surrogate, slope).sum().backward()
    x_smooth = x.clone().requires_grad_(True)
    primitive(x_smooth, surrogate, slope).sum().backward()
    torch.testing.assert_close(x_spike.grad, x_smooth.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_derivative_peaks_at_one(surrogate: str) -> None:
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    values = surrogate_derivative(x, surrogate, 1.7)
    assert values.max().item() == pytest.approx(1.0, abs=1e-12)
    assert x[values.argmax()].item() == pytest.approx(0.0, abs=1e-12)


def test_unknown_surrogate_lists_choices() -> None:
    with pytest.raises(ValueError, match="surrogate must be one of 'fast_sigmoid', 'arctan', 'triangle', got 'relu'"):
        spike(torch.zeros(1), "relu")  # type: ignore[arg-type]


@pytest.mark.parametrize("slope", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_slope_rejected(slope: float) -> None:
    with pytest.raises(ValueError, match="surrogate slope must be a finite number above 0"):
        spike(torch.zeros(1), slope=slope)
