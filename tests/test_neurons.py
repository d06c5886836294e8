"""Neuron populations against closed-form values, exact spike steps and the refractory rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ember.core import broadcast_shapes
from ember.neurons import EIF, LIF, QIF, AdaptiveLIF, AdEx, Izhikevich, Population
from ember.neurons import functional as F

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]
F64 = torch.float64


def raster(population: Population, steps: int, current: torch.Tensor | float | None = None) -> torch.Tensor:
    """Run ``steps`` steps with a constant current (nA) and return the spikes, shape ``(steps, B, *shape)``."""
    if current is not None:
        current = torch.as_tensor(current, dtype=population.dtype, device=population.device)
        current = current.expand(population.v.shape)
    return torch.stack([population.step(current) for _ in range(steps)])


def spike_steps(spikes: torch.Tensor) -> list[int]:
    """Steps at which a single neuron spiked, from a raster ``(steps, 1, 1)``."""
    return torch.nonzero(spikes.reshape(-1)).reshape(-1).tolist()


def integration_steps(v_start: float, v_inf: float, v_threshold: float, tau: float, dt: float) -> int:
    """Closed form: LIF steps from ``v_start`` until ``v >= v_threshold`` under constant drive ``v_inf``."""
    t_cross = tau * math.log((v_inf - v_start) / (v_inf - v_threshold))
    return math.ceil(t_cross / dt)


# ---------------------------------------------------------------------- LIF


@pytest.mark.parametrize("device", DEVICES)
def test_lif_subthreshold_matches_analytic(device: str) -> None:
    dt, tau, current = 0.1, 20.0, 10.0
    lif = LIF(1, dt=dt, tau_mem=tau, v_rest=-65.0, v_threshold=-50.0, dtype=F64, device=device)
    v_inf = -65.0 + 1.0 * current
    for k in range(1, 301):
        lif.step(torch.full((1, 1), current, dtype=F64, device=device))
        expected = v_inf + (-65.0 - v_inf) * math.exp(-k * dt / tau)
        assert lif.v.item() == pytest.approx(expected, rel=1e-12)
    assert lif.spikes.sum().item() == 0.0


def test_lif_resistance_scales_drive() -> None:
    lif = LIF(1, dt=1.0, tau_mem=10.0, v_rest=0.0, v_reset=-1.0, v_threshold=100.0, resistance=4.0, dtype=F64)
    lif.step(torch.full((1, 1), 2.5, dtype=F64))
    assert lif.v.item() == pytest.approx(10.0 * (1 - math.exp(-0.1)), rel=1e-12)


@pytest.mark.parametrize(
    ("v_inf", "tau", "dt"),
    [(2.0, 10.0, 1.0), (1.5, 20.0, 0.5), (3.0, 5.0, 0.1), (1.1, 10.0, 1.0)],
)
def test_lif_spike_steps_constant_input(v_inf: float, tau: float, dt: float) -> None:
    lif = LIF(1, dt=dt, tau_mem=tau, v_rest=0.0, v_reset=0.0, v_threshold=1.0, dtype=F64)
    period = integration_steps(0.0, v_inf, 1.0, tau, dt)
    steps = 6 * period
    spikes = raster(lif, steps, v_inf)
    expected = list(range(period - 1, steps, period))
    assert spike_steps(spikes) == expected


@pytest.mark.parametrize("refractory_steps", [0, 1, 2, 5])
def test_lif_spike_steps_with_refractory(refractory_steps: int) -> None:
    dt, tau, v_inf = 1.0, 10.0, 2.0
    lif = LIF(
        1, dt=dt, tau_mem=tau, v_rest=0.0, v_reset=0.0, v_threshold=1.0,
        refractory_period=refractory_steps * dt, dtype=F64,
    )  # fmt: skip
    climb = integration_steps(0.0, v_inf, 1.0, tau, dt)  # 7 steps
    # The counter blocks the r - 1 steps after a spike; integration restarts from reset after that.
    period = climb + max(refractory_steps - 1, 0)
    spikes = raster(lif, 60, v_inf)
    assert spike_steps(spikes) == list(range(climb - 1, 60, period))


@pytest.mark.parametrize("device", DEVICES)
def test_refractory_saturating_drive_1ms(device: str) -> None:
    # One step from reset crosses threshold: v(dt) = -65 + 10000 (1 - exp(-0.1 / 20)) ≈ -15 mV.
    lif = LIF(1, dt=0.1, tau_mem=20.0, refractory_period=1.0, device=device)
    spikes = raster(lif, 10_000, 1e4)
    steps = spike_steps(spikes.cpu())
    assert len(steps) == 1000
    assert steps[0] == 0
    assert set(torch.diff(torch.tensor(steps)).tolist()) == {10}


@pytest.mark.parametrize(
    ("refractory_period", "dt", "isi"),
    [
        (2.0, 0.1, 20), (2.0, 0.05, 40), (2.0, 0.2, 10),
        (1.9, 0.1, 19), (2.1, 0.1, 21), (1.95, 0.05, 39), (2.05, 0.05, 41),
        (1.8, 0.2, 9), (2.2, 0.2, 11), (0.3, 0.1, 3),
    ],
)  # fmt: skip
def test_refractory_saturating_isi(refractory_period: float, dt: float, isi: int) -> None:
    lif = LIF(1, dt=dt, tau_mem=20.0, refractory_period=refractory_period)
    steps = spike_steps(raster(lif, 50 * isi, 1e5))
    assert len(steps) == 50
    assert set(torch.diff(torch.tensor(steps)).tolist()) == {isi}


def test_refractory_zero_spikes_every_step() -> None:
    lif = LIF(3, dt=0.1, tau_mem=20.0, refractory_period=0.0)
    spikes = raster(lif, 40, 1e5)
    assert bool((spikes == 1.0).all())


def test_refractory_holds_reset_and_ignores_input() -> None:
    lif = LIF(1, dt=1.0, tau_mem=10.0, v_reset=-70.0, refractory_period=4.0)
    lif.step(None, torch.full((1, 1), 30.0))
    assert lif.spikes.item() == 1.0
    assert lif.refractory.item() == 4
    for counter in (3, 2, 1):
        lif.step(torch.full((1, 1), 1e5), torch.full((1, 1), 100.0))
        assert lif.spikes.item() == 0.0
        assert lif.v.item() == -70.0
        assert lif.refractory.item() == counter
    # The counter reaches 0 at the 4th step: the neuron integrates and may fire again.
    lif.step(None, torch.full((1, 1), 30.0))
    assert lif.spikes.item() == 1.0


def test_refractory_period_not_whole_steps_rejected() -> None:
    with pytest.raises(ValueError, match="refractory_period of 2.05 ms is not a whole number of steps at dt = 0.1"):
        LIF(1, dt=0.1, refractory_period=2.05)


def test_heterogeneous_refractory_periods() -> None:
    lif = LIF(3, dt=0.5, refractory_period=torch.tensor([0.0, 1.5, 3.0]))
    assert lif.refractory_steps.tolist() == [0, 3, 6]
    spikes = raster(lif, 60, 1e5)
    counts = spikes.sum(dim=0).reshape(-1).tolist()
    assert counts == [60.0, 20.0, 10.0]


def test_heterogeneous_tau_closed_form() -> None:
    taus = torch.tensor([5.0, 10.0, 20.0, 40.0], dtype=F64)
    lif = LIF(4, dt=0.5, tau_mem=taus, v_rest=-70.0, v_threshold=-40.0, dtype=F64)
    raster(lif, 10, 20.0)
    expected = -50.0 + (-70.0 + 50.0) * torch.exp(-5.0 / taus)
    torch.testing.assert_close(lif.v[0], expected, rtol=1e-12, atol=0.0)


def test_heterogeneous_thresholds_spike_steps() -> None:
    thresholds = torch.tensor([0.5, 1.0, 1.5], dtype=F64)
    lif = LIF(3, dt=1.0, tau_mem=10.0, v_rest=0.0, v_reset=0.0, v_threshold=thresholds, dtype=F64)
    spikes = raster(lif, 30, 2.0)
    for index, threshold in enumerate(thresholds.tolist()):
        first = integration_steps(0.0, 2.0, threshold, 10.0, 1.0) - 1
        assert torch.nonzero(spikes[:, 0, index]).reshape(-1)[0].item() == first


def test_lif_jump_added_after_integration() -> None:
    lif = LIF(1, dt=1.0, tau_mem=10.0, v_rest=0.0, v_reset=-5.0, v_threshold=10.0, dtype=F64)
    lif.step(torch.full((1, 1), 5.0, dtype=F64), torch.full((1, 1), 3.0, dtype=F64))
    assert lif.v.item() == pytest.approx(5.0 * (1 - math.exp(-0.1)) + 3.0, rel=1e-12)
    lif.step(None, torch.full((1, 1), 10.0, dtype=F64))
    assert lif.spikes.item() == 1.0
    assert lif.v.item() == -5.0


def test_spike_at_exact_threshold() -> None:
    lif = LIF(1, dt=1.0, v_rest=0.0, v_reset=-1.0, v_threshold=2.0, dtype=F64)
    lif.step(None, torch.full((1, 1), 2.0, dtype=F64))
    assert lif.spikes.item() == 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: LIF((2, 3), dt=0.5, batch_size=4),
        lambda: AdaptiveLIF((2, 3), dt=0.5, batch_size=4, theta_shared=False, theta_plus=1.0),
        lambda: Izhikevich((2, 3), dt=0.5, batch_size=4),
        lambda: QIF((2, 3), dt=0.5, batch_size=4),
        lambda: EIF((2, 3), dt=0.5, batch_size=4),
        lambda: AdEx((2, 3), dt=0.5, batch_size=4),
    ],
    ids=["LIF", "AdaptiveLIF", "Izhikevich", "QIF", "EIF", "AdEx"],
)
def test_batch_equals_separate_runs(make) -> None:
    generator = torch.Generator().manual_seed(1234)
    drive = 12.0 if make().__class__ is AdEx else 40.0
    currents = torch.rand(80, 4, 2, 3, generator=generator, dtype=torch.float32) * drive
    batched = make()
    batched_spikes = torch.stack([batched.step(currents[t]) for t in range(80)])
    assert batched_spikes.sum() > 0
    for sample in range(4):
        single = make()
        single.set_batch_size(1)
        single_spikes = torch.stack([single.step(currents[t, sample : sample + 1]) for t in range(80)])
        assert torch.equal(single_spikes[:, 0], batched_spikes[:, sample])
        assert torch.equal(single.v[0], batched.v[sample])


# --------------------------------------------------------------- AdaptiveLIF


def test_adaptive_theta_increment_and_decay() -> None:
    dt, tau_theta, theta_plus = 1.0, 50.0, 2.0
    neurons = AdaptiveLIF(
        1, dt=dt, v_rest=0.0, v_reset=0.0, v_threshold=1.0,
        theta_plus=theta_plus, tau_theta=tau_theta, dtype=F64,
    )  # fmt: skip
    neurons.step(None, torch.full((1, 1), 5.0, dtype=F64))
    assert neurons.spikes.item() == 1.0
    assert neurons.theta.item() == pytest.approx(theta_plus, rel=1e-12)
    for k in range(1, 30):
        neurons.step(None)
        assert neurons.theta.item() == pytest.approx(theta_plus * math.exp(-k * dt / tau_theta), rel=1e-12)
    assert neurons.threshold.item() == pytest.approx(1.0 + theta_plus * math.exp(-29 / tau_theta), rel=1e-12)


def test_adaptive_theta_accumulates() -> None:
    neurons = AdaptiveLIF(1, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0, theta_plus=2.0, tau_theta=10.0)
    kick = torch.full((1, 1), 50.0)
    neurons.step(None, kick)
    neurons.step(None, kick)
    assert neurons.spikes.item() == 1.0
    assert neurons.theta.item() == pytest.approx(2.0 * math.exp(-0.1) + 2.0, rel=1e-6)


def test_adaptive_raised_threshold_blocks_spike() -> None:
    neurons = AdaptiveLIF(1, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0, theta_plus=5.0)
    kick = torch.full((1, 1), 4.0)
    assert neurons.step(None, kick).item() == 1.0
    # The threshold is now 1 + 5 mV (decay over one step is negligible at tau_theta = 1e7 ms).
    assert neurons.step(None, kick).item() == 0.0
    assert neurons.v.item() == pytest.approx(4.0)
    assert neurons.step(None, kick).item() == 1.0
    assert neurons.threshold.item() == pytest.approx(11.0)


def test_adaptive_per_sample_and_shared() -> None:
    kick = torch.zeros(4, 2)
    kick[0, 0] = kick[1, 0] = kick[1, 1] = 50.0
    per_sample = AdaptiveLIF(2, dt=1.0, batch_size=4, theta_plus=2.0, theta_shared=False)
    shared = AdaptiveLIF(2, dt=1.0, batch_size=4, theta_plus=2.0, theta_shared=True)
    per_sample.step(None, kick)
    shared.step(None, kick)
    expected_per_sample = torch.tensor([[2.0, 0.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(per_sample.theta, expected_per_sample)
    # Shared: theta_plus times the fraction of samples that spiked, 2/4 and 1/4.
    torch.testing.assert_close(shared.theta, torch.tensor([1.0, 0.5]))
    assert per_sample.threshold.shape == (4, 2)
    assert shared.threshold.shape == (2,)


def test_adaptive_reset_keeps_shared_theta() -> None:
    shared = AdaptiveLIF(1, dt=1.0, theta_plus=2.0)
    per_sample = AdaptiveLIF(1, dt=1.0, theta_plus=2.0, theta_shared=False)
    for neurons in (shared, per_sample):
        neurons.step(None, torch.full((1, 1), 50.0))
        neurons.reset_state()
    assert shared.theta.item() == 2.0
    assert per_sample.theta.item() == 0.0
    assert "theta" in shared.state_dict()
    shared.reset_parameters()
    assert shared.theta.item() == 0.0


def test_adaptive_frozen_theta() -> None:
    neurons = AdaptiveLIF(1, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0, theta_plus=2.0, tau_theta=5.0)
    neurons.step(None, torch.full((1, 1), 50.0))
    neurons.adapt = False
    for _ in range(10):
        neurons.step(None, torch.full((1, 1), 50.0))
    assert neurons.spikes.item() == 1.0
    assert neurons.theta.item() == 2.0


# ---------------------------------------------------------------- Izhikevich


def izhikevich_reference(current: float, steps: int, dt: float, a: float, b: float, c: float, d: float) -> list[int]:
    """Spike steps of a scalar forward Euler loop of the Izhikevich equations."""
    v, u, spikes = c, b * c, []
    for step in range(steps):
        v, u = v + dt * (0.04 * v * v + 5 * v + 140 - u + current), u + dt * a * (b * v - u)
        if v >= 30.0:
            spikes.append(step)
            v, u = c, u + d
    return spikes


def test_izhikevich_rest_fixed_point() -> None:
    # Without input, u = b v and 0.04 v^2 + 4.8 v + 140 = 0 give the stable rest v = -70 mV.
    neurons = Izhikevich(1, dt=0.5, dtype=F64)
    neurons.v = torch.full((1, 1), -70.0, dtype=F64)
    neurons.u = torch.full((1, 1), -14.0, dtype=F64)
    raster(neurons, 100)
    assert neurons.v.item() == pytest.approx(-70.0, abs=1e-12)
    fresh = Izhikevich(1, dt=0.5, dtype=F64)
    raster(fresh, 2000)
    assert fresh.v.item() == pytest.approx(-70.0, abs=1e-6)
    assert fresh.u.item() == pytest.approx(-14.0, abs=1e-6)


def test_izhikevich_one_step_euler() -> None:
    neurons = Izhikevich(1, dt=0.5, dtype=F64)
    neurons.step(torch.full((1, 1), 10.0, dtype=F64))
    v0, u0 = -65.0, -13.0
    assert neurons.v.item() == pytest.approx(v0 + 0.5 * (0.04 * v0**2 + 5 * v0 + 140 - u0 + 10.0), rel=1e-12)
    assert neurons.u.item() == pytest.approx(u0 + 0.5 * 0.02 * (0.2 * v0 - u0), rel=1e-12)


def test_izhikevich_capacitance_scales_input() -> None:
    neurons = Izhikevich(1, dt=0.5, capacitance=2.0, dtype=F64)
    neurons.step(torch.full((1, 1), 10.0, dtype=F64))
    assert neurons.v.item() == pytest.approx(-65.0 + 0.5 * (0.04 * 65**2 - 325 + 140 + 13 + 5.0), rel=1e-12)


def test_izhikevich_regular_spiking_adapts() -> None:
    neurons = Izhikevich(1, dt=0.1, dtype=F64)
    steps = spike_steps(raster(neurons, 10_000, 10.0))
    assert steps == izhikevich_reference(10.0, 10_000, 0.1, 0.02, 0.2, -65.0, 8.0)
    intervals = torch.diff(torch.tensor(steps)).tolist()
    # Spike-frequency adaptation: the first interval is the shortest, later ones settle.
    assert intervals[0] < 0.6 * intervals[-1]
    assert intervals == sorted(intervals[:3]) + intervals[3:]
    assert 15 <= len(steps) <= 30


def test_izhikevich_fast_spiking_outfires_regular() -> None:
    regular = raster(Izhikevich(1, dt=0.1), 5000, 10.0).sum().item()
    fast = raster(Izhikevich(1, dt=0.1, a=0.1, d=2.0), 5000, 10.0).sum().item()
    assert fast > 2 * regular


def test_izhikevich_spike_resets_and_raises_u() -> None:
    neurons = Izhikevich(1, dt=0.5, dtype=F64)
    neurons.v = torch.full((1, 1), 29.0, dtype=F64)
    u_before = neurons.u.item()
    neurons.step(None)
    assert neurons.spikes.item() == 1.0
    assert neurons.v.item() == -65.0
    u_euler = u_before + 0.5 * 0.02 * (0.2 * 29.0 - u_before)
    assert neurons.u.item() == pytest.approx(u_euler + 8.0, rel=1e-12)


def test_izhikevich_two_substeps() -> None:
    neurons = Izhikevich(1, dt=1.0, substeps=2, dtype=F64)
    neurons.step(torch.full((1, 1), 10.0, dtype=F64))
    v, u = -65.0, -13.0
    for _ in range(2):
        v, u = v + 0.5 * (0.04 * v * v + 5 * v + 140 - u + 10.0), u + 0.5 * 0.02 * (0.2 * v - u)
    assert neurons.v.item() == pytest.approx(v, rel=1e-12)
    assert neurons.u.item() == pytest.approx(u, rel=1e-12)


def test_izhikevich_substeps_first_spike() -> None:
    coarse = spike_steps(raster(Izhikevich(1, dt=1.0, substeps=10, dtype=F64), 30, 10.0))
    fine = spike_steps(raster(Izhikevich(1, dt=0.1, dtype=F64), 300, 10.0))
    # Until the first reset, ten substeps of 0.1 ms are the 0.1 ms run on a 1 ms grid.
    assert coarse[0] == fine[0] // 10


# ------------------------------------------------------------------ QIF, EIF, AdEx


def test_qif_one_step_euler() -> None:
    neurons = QIF(1, dt=0.5, dtype=F64)
    neurons.step(torch.full((1, 1), 4.0, dtype=F64))
    v0 = -65.0
    expected = v0 + 0.5 / 10.0 * (0.04 * (v0 + 65.0) * (v0 + 50.0) + 4.0)
    assert neurons.v.item() == pytest.approx(expected, rel=1e-12)


def test_qif_two_substeps() -> None:
    neurons = QIF(1, dt=1.0, substeps=2, v_rest=0.0, v_critical=10.0, curvature=0.1, v_reset=0.0, v_peak=1e3, dtype=F64)
    neurons.v = torch.full((1, 1), 20.0, dtype=F64)
    neurons.step(None)
    v = 20.0
    for _ in range(2):
        v = v + 0.5 * 0.1 * v * (v - 10.0) / 10.0
    assert neurons.v.item() == pytest.approx(v, rel=1e-12)


def test_qif_spike_time_matches_analytic() -> None:
    # tau dv/dt = a ((v - m)^2 + kappa^2) with m = (v_rest + v_critical) / 2 integrates to a tangent.
    tau, a, v_rest, v_critical, v_peak, drive, dt = 10.0, 0.04, -65.0, -50.0, 0.0, 10.0, 0.005
    m, half_width = (v_rest + v_critical) / 2, (v_critical - v_rest) / 2
    kappa = math.sqrt((drive - a * half_width**2) / a)
    t_spike = tau / (a * kappa) * (math.atan((v_peak - m) / kappa) - math.atan((v_rest - m) / kappa))
    neurons = QIF(1, dt=dt, tau_mem=tau, curvature=a, v_rest=v_rest, v_critical=v_critical, v_peak=v_peak, dtype=F64)
    steps = spike_steps(raster(neurons, int(1.2 * t_spike / dt), drive))
    assert (steps[0] + 1) * dt == pytest.approx(t_spike, rel=0.01)
    assert neurons.v.item() < v_critical


def test_qif_below_rheobase_stays_silent() -> None:
    # Drive below a (v_critical - v_rest)^2 / 4 = 2.25 mV leaves a stable fixed point.
    neurons = QIF(1, dt=0.1)
    assert raster(neurons, 3000, 2.0).sum().item() == 0.0


def test_eif_one_step_euler() -> None:
    neurons = EIF(1, dt=0.25, dtype=F64)
    neurons.v = torch.full((1, 1), -52.0, dtype=F64)
    neurons.step(torch.full((1, 1), 3.0, dtype=F64))
    v0 = -52.0
    rate = (-(v0 + 65.0) + 2.0 * math.exp((v0 + 50.0) / 2.0) + 3.0) / 10.0
    assert neurons.v.item() == pytest.approx(v0 + 0.25 * rate, rel=1e-12)


def test_eif_spikes_and_resets() -> None:
    neurons = EIF(1, dt=0.1, v_reset=-68.0, dtype=F64)
    spikes = raster(neurons, 500, 20.0)
    steps = spike_steps(spikes)
    assert len(steps) >= 2
    neurons.reset_state()
    for step in range(steps[0] + 1):
        neurons.step(torch.full((1, 1), 20.0, dtype=F64))
    assert neurons.spikes.item() == 1.0
    assert neurons.v.item() == -68.0


def test_adex_one_step_euler() -> None:
    neurons = AdEx(1, dt=0.1, dtype=F64)
    neurons.v = torch.full((1, 1), -55.0, dtype=F64)
    neurons.w = torch.full((1, 1), 0.1, dtype=F64)
    neurons.step(torch.full((1, 1), 0.5, dtype=F64))
    v0, w0, tau, r = -55.0, 0.1, 9.37, 33.3
    dv = (-(v0 + 70.6) + 2.0 * math.exp((v0 + 50.4) / 2.0) - r * w0 + r * 0.5) / tau
    dw = (0.004 * (v0 + 70.6) - w0) / 144.0
    assert neurons.v.item() == pytest.approx(v0 + 0.1 * dv, rel=1e-12)
    assert neurons.w.item() == pytest.approx(w0 + 0.1 * dw, rel=1e-12)


def test_adex_spike_and_refractory_w() -> None:
    neurons = AdEx(1, dt=0.5, refractory_period=1.0, dtype=F64)
    neurons.v = torch.full((1, 1), 19.0, dtype=F64)
    neurons.step(None, torch.full((1, 1), 5.0, dtype=F64))
    assert neurons.spikes.item() == 1.0
    assert neurons.v.item() == -70.6
    w_spike = 0.5 * 0.004 * (19.0 + 70.6) / 144.0 + 0.0805
    assert neurons.w.item() == pytest.approx(w_spike, rel=1e-12)
    neurons.step(torch.full((1, 1), 100.0, dtype=F64))
    assert neurons.v.item() == -70.6
    assert neurons.w.item() == pytest.approx(w_spike - 0.5 * w_spike / 144.0, rel=1e-12)


def test_adex_adaptation_lengthens_intervals() -> None:
    steps = spike_steps(raster(AdEx(1, dt=0.1), 3000, 1.0))
    intervals = torch.diff(torch.tensor(steps)).tolist()
    assert len(intervals) >= 4
    assert intervals == sorted(intervals)
    assert intervals[0] < intervals[-1]


def test_euler_stops_neurons_past_peak() -> None:
    v = torch.tensor([[5.0, 0.0]], dtype=F64)
    active = torch.ones_like(v, dtype=torch.bool)
    (v_next,) = F.euler((v,), lambda x: (torch.full_like(x, 4.0),), 1.0, 4, active, torch.tensor(2.0, dtype=F64))
    # The first neuron starts above the peak and stays; the second stops at 2 mV after two substeps.
    assert v_next.tolist() == [[5.0, 2.0]]


def test_functional_step_does_not_mutate_inputs() -> None:
    state = F.LIFState(torch.full((2, 3), -60.0), torch.tensor([[0, 2, 1]] * 2, dtype=torch.int32))
    parameters = LIF(3, dt=1.0).parameters_record()
    before = [tensor.clone() for tensor in state]
    current = torch.full((2, 3), 50.0)
    F.lif_step(current, None, state, parameters, 1.0)
    for original, tensor in zip(before, state):
        assert torch.equal(original, tensor)
    assert torch.equal(current, torch.full((2, 3), 50.0))


# ------------------------------------------------------------------ gradients


def test_lif_gradcheck_through_steps() -> None:
    tau = torch.tensor([10.0, 15.0, 20.0], dtype=F64, requires_grad=True)
    v0 = torch.tensor([[-60.0, -58.0, -62.0]], dtype=F64, requires_grad=True)
    # Neuron 1 crosses -50 mV near step 2; the others stay below threshold.
    currents = torch.tensor([[[3.0, 40.0, 5.0]]] * 5, dtype=F64, requires_grad=True)
    base = LIF(3, dt=1.0, refractory_period=2.0, dtype=F64)

    def trajectory(tau_mem: torch.Tensor, v_start: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        parameters = base.parameters_record()._replace(tau_mem=tau_mem)
        state = F.LIFState(v_start, torch.zeros(1, 3, dtype=torch.int32))
        voltages = []
        for t in range(current.shape[0]):
            _, state = F.lif_step(current[t], None, state, parameters, 1.0)
            voltages.append(state.v)
        return torch.stack(voltages)

    voltages = trajectory(tau, v0, currents)
    assert voltages[:, 0, 1].min().item() == -65.0
    assert torch.autograd.gradcheck(trajectory, (tau, v0, currents))


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "arctan", "triangle"])
def test_spike_gradient_through_lif(surrogate: str) -> None:
    lif = LIF(1, dt=1.0, tau_mem=10.0, v_rest=0.0, v_reset=-1.0, v_threshold=1.0, surrogate=surrogate, dtype=F64)
    current = torch.full((1, 1), 10.2, dtype=F64, requires_grad=True)
    spikes = lif.step(current)
    spikes.sum().backward()
    gain = 1 - math.exp(-0.1)
    x = 10.2 * gain - 1.0  # v - threshold, about -0.03 mV
    derivative = {"fast_sigmoid": 1 / (1 + abs(x)) ** 2, "arctan": 1 / (1 + x * x), "triangle": 1 - abs(x)}
    assert spikes.item() == 0.0
    assert current.grad.item() == pytest.approx(derivative[surrogate] * gain, rel=1e-12)


def test_bptt_through_module_steps() -> None:
    lif = LIF(2, dt=0.5, tau_mem=torch.tensor([8.0, 16.0]), trainable=("tau_mem",), dtype=F64)
    assert isinstance(lif.tau_mem, torch.nn.Parameter)
    drive = torch.full((1, 2), 6.0, dtype=F64)
    for _ in range(7):
        lif.step(drive)
    lif.v.sum().backward()
    # v_n = v_inf + (v0 - v_inf) exp(-n dt / tau), so dv_n/dtau = (v0 - v_inf) exp(-n dt / tau) n dt / tau^2.
    taus = torch.tensor([8.0, 16.0], dtype=F64)
    expected = -6.0 * torch.exp(-3.5 / taus) * 3.5 / taus**2
    torch.testing.assert_close(lif.tau_mem.grad, expected, rtol=1e-12, atol=0.0)


def test_trainable_threshold_gets_surrogate_gradient() -> None:
    lif = LIF(1, dt=1.0, v_rest=0.0, v_reset=-1.0, v_threshold=1.0, trainable=("v_threshold",), dtype=F64)
    lif.step(None, torch.full((1, 1), 1.5, dtype=F64)).sum().backward()
    # d spike / d threshold = -1 / (1 + |0.5|)^2
    assert lif.v_threshold.grad.tolist() == [pytest.approx(-1 / 2.25, rel=1e-12)]


# ------------------------------------------------------------ module mechanics


@pytest.mark.parametrize("device", DEVICES)
def test_to_moves_parameters_and_state(device: str) -> None:
    lif = LIF(3, dt=1.0, tau_mem=torch.tensor([5.0, 10.0, 20.0]), refractory_period=2.0)
    lif = lif.to(device=device, dtype=F64)
    assert lif.tau_mem.dtype == F64
    assert lif.tau_mem.device.type == device
    assert lif.v.dtype == F64
    assert lif.refractory.dtype == torch.int32
    assert lif.refractory_steps.device.type == device
    lif.step(torch.full((1, 3), 1000.0, dtype=F64, device=device))
    assert lif.spikes.tolist() == [[1.0, 1.0, 1.0]]


def test_state_dict_round_trip() -> None:
    source = Izhikevich(2, dt=0.5, batch_size=2, a=torch.tensor([0.02, 0.1]))
    raster(source, 30, 10.0)
    target = Izhikevich(2, dt=0.5, batch_size=2, a=torch.tensor([0.02, 0.1]))
    target.load_state_dict(source.state_dict())
    assert {"v", "u", "refractory", "spikes", "a", "refractory_steps"} <= set(source.state_dict())
    torch.testing.assert_close(raster(target, 20, 10.0), raster(source, 20, 10.0))


def test_reset_and_batch_size() -> None:
    lif = LIF(2, dt=1.0, v_rest=torch.tensor([-70.0, -60.0]), v_threshold=-40.0, refractory_period=3.0)
    raster(lif, 5, 100.0)
    lif.reset_state()
    assert lif.v.tolist() == [[-70.0, -60.0]]
    assert lif.refractory.tolist() == [[0, 0]]
    lif.set_batch_size(3)
    assert lif.v.shape == (3, 2)
    assert lif.threshold.tolist() == [-40.0, -40.0]


def test_extra_repr_shows_non_defaults() -> None:
    text = repr(LIF(4, dt=0.5, tau_mem=10.0, v_threshold=torch.full((4,), -52.0), surrogate="arctan"))
    assert "shape=(4,)" in text
    assert "tau_mem=10" in text
    assert "v_threshold=<tensor (4,)>" in text
    assert "surrogate='arctan'" in text
    assert "v_rest" not in text
    adaptive = repr(AdaptiveLIF(1, dt=1.0, theta_shared=False))
    assert "theta_shared=False" in adaptive


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LIF(2, dt=1.0, tau_mem=0.0), "tau_mem must be above 0 ms, got 0 ms"),
        (lambda: LIF(2, dt=1.0, tau_mem=torch.tensor([5.0, -1.0])), "tau_mem must be above 0 ms"),
        (lambda: LIF(2, dt=1.0, v_reset=-50.0), "v_reset must be below v_threshold for every neuron"),
        (lambda: LIF(2, dt=1.0, resistance=-1.0), "resistance must be above 0"),
        (lambda: LIF(2, dt=1.0, v_rest=float("nan")), "v_rest must be finite"),
        (lambda: LIF(2, dt=1.0, tau_mem=torch.ones(3)), r"broadcastable to the population shape \(2,\)"),
        (lambda: LIF(2, dt=1.0, tau_mem=torch.ones(1, 2)), r"got a tensor of shape \(1, 2\)"),
        (lambda: LIF(2, dt=1.0, refractory_period=-1.0), "refractory_period must be a finite duration"),
        (lambda: LIF(2, dt=1.0, trainable=("tau",)), "trainable must name parameters of LIF"),
        (lambda: LIF(2, dt=1.0, trainable="tau_mem"), "trainable must name parameters"),
        (lambda: LIF(2, dt=1.0, surrogate="sigmoid"), "surrogate must be one of"),
        (lambda: LIF(2, dt=0.0), "dt must be a finite step length above 0 ms"),
        (lambda: AdaptiveLIF(2, dt=1.0, theta_plus=-0.1), "theta_plus must be at least 0 mV"),
        (lambda: AdaptiveLIF(2, dt=1.0, tau_theta=0.0), "tau_theta must be above 0 ms"),
        (lambda: Izhikevich(2, dt=1.0, c=40.0), "c must be below v_peak"),
        (lambda: Izhikevich(2, dt=1.0, substeps=0), "substeps must be a whole number of at least 1"),
        (lambda: QIF(2, dt=1.0, v_critical=-70.0), "v_rest must be below v_critical"),
        (lambda: QIF(2, dt=1.0, curvature=0.0), "curvature must be above 0 1/mV"),
        (lambda: EIF(2, dt=1.0, sharpness=0.2), "v_peak may be at most 60 \\* sharpness above v_rheobase"),
        (lambda: AdEx(2, dt=1.0, tau_w=-5.0), "tau_w must be above 0 ms"),
        (lambda: AdEx(2, dt=1.0, v_reset=30.0), "v_reset must be below v_peak"),
    ],
)
def test_invalid_parameters_rejected(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_input_shape_mismatch_rejected() -> None:
    lif = LIF(3, dt=1.0, batch_size=2)
    with pytest.raises(ValueError, match=r"current must have shape \(batch_size, \*shape\) = \(2, 3\) for LIF, got \(2, 4\)"):
        lif.step(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"jump must have shape .* got \(3, 3\)"):
        lif.step(None, torch.zeros(3, 3))


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        (((3, 1), (1, 4)), (3, 4)),
        (((5,), (2, 5)), (2, 5)),
        (((), (3,)), (3,)),
        (((2, 1, 4), (3, 1)), (2, 3, 4)),
        (((1,), (1,), (6, 1)), (6, 1)),
    ],
)
def test_broadcast_shapes_follows_numpy_rules(shapes, expected):
    assert broadcast_shapes(*shapes) == expected
    assert broadcast_shapes(*shapes) == tuple(np.broadcast_shapes(*shapes))


@pytest.mark.parametrize("shapes", [((3,), (4,)), ((2, 3), (3, 2))])
def test_broadcast_shapes_names_the_clashing_sizes(shapes):
    with pytest.raises(ValueError, match="do not broadcast"):
        broadcast_shapes(*shapes)
