"""Synapse kinetics against closed-form values."""

from __future__ import annotations

import math

import pytest
import torch

from ember.neurons import LIF
from ember.synapses import Conductance, Delta, DoubleExponentialCurrent, ExponentialCurrent, Synapse

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]
F64 = torch.float64


def impulse_response(synapse: Synapse, steps: int, weight: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
    """Currents of ``steps`` steps after ``weight`` arrives at step 0, shape ``(steps, B, *post_shape)``."""
    v = torch.zeros_like(weight) if v is None else v
    currents = []
    for step in range(steps):
        current, jump = synapse(weight if step == 0 else torch.zeros_like(weight), v)
        assert jump is None
        currents.append(current)
    return torch.stack(currents)


# ---------------------------------------------------------------------- Delta


def test_delta_voltage_returns_jump() -> None:
    synapse = Delta(dt=0.1)
    synapse.bind(3, 2)
    arrived = torch.tensor([[1.0, 0.0, -2.0], [0.5, 0.5, 0.0]])
    current, jump = synapse(arrived, torch.zeros(2, 3))
    assert current is None
    assert torch.equal(jump, arrived)
    assert synapse.input_unit == "mV"


def test_delta_voltage_jump_fires_lif() -> None:
    synapse = Delta()
    synapse.bind(2, 1)
    lif = LIF(2, dt=1.0)
    _, jump = synapse(torch.tensor([[15.0, 14.0]]), lif.v)
    lif.step(None, jump)
    # From rest at -65 mV, 15 mV reaches the -50 mV threshold and 14 mV does not.
    assert lif.spikes.tolist() == [[1.0, 0.0]]
    assert lif.v[0, 1].item() == pytest.approx(-51.0)


@pytest.mark.parametrize("dt", [0.1, 0.5, 2.0])
def test_delta_current_is_charge_over_step(dt: float) -> None:
    synapse = Delta(mode="current", dt=dt, dtype=F64)
    synapse.bind(2, 1)
    current, jump = synapse(torch.tensor([[3.0, -1.0]], dtype=F64), torch.zeros(1, 2, dtype=F64))
    assert jump is None
    torch.testing.assert_close(current, torch.tensor([[3.0 / dt, -1.0 / dt]], dtype=F64), rtol=1e-15, atol=0.0)
    assert synapse.input_unit == "pC"


def test_delta_current_moves_lif_by_charge_over_capacitance() -> None:
    # For tau_mem >> dt, a charge q (pC) into C = tau_mem / R (nF) raises v by about q / C mV.
    dt, tau, resistance, charge = 0.01, 20.0, 10.0, 2.0
    synapse = Delta(mode="current", dt=dt, dtype=F64)
    synapse.bind(1, 1)
    lif = LIF(1, dt=dt, tau_mem=tau, resistance=resistance, dtype=F64)
    current, _ = synapse(torch.full((1, 1), charge, dtype=F64), lif.v)
    lif.step(current)
    exact = resistance * charge / dt * (1 - math.exp(-dt / tau))
    assert lif.v.item() + 65.0 == pytest.approx(exact, rel=1e-12)
    assert exact == pytest.approx(charge * resistance / tau, rel=1e-3)


def test_delta_bad_mode_lists_choices() -> None:
    with pytest.raises(ValueError, match="mode of Delta must be one of 'voltage', 'current', got 'charge'"):
        Delta(mode="charge")  # type: ignore[arg-type]


def test_delta_current_needs_dt() -> None:
    synapse = Delta(mode="current")
    synapse.bind(1, 1)
    with pytest.raises(ValueError, match="Delta has no step length: pass dt="):
        synapse(torch.ones(1, 1), torch.zeros(1, 1))
    synapse.bind(1, 1, dt=0.5)
    assert synapse(torch.ones(1, 1), torch.zeros(1, 1))[0].item() == 2.0


# -------------------------------------------------------- ExponentialCurrent


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("device", DEVICES)
def test_exponential_decays_by_e_after_tau(device: str, dtype: torch.dtype) -> None:
    synapse = ExponentialCurrent(tau_syn=10.0, dt=1.0, dtype=dtype, device=device)
    synapse.bind(1, 1)
    currents = impulse_response(synapse, 11, torch.full((1, 1), 0.7, dtype=dtype, device=device))
    assert currents[0].item() == pytest.approx(0.7, rel=1e-6)
    assert currents[10].item() == pytest.approx(currents[0].item() * math.exp(-1.0), rel=1e-6)


def test_exponential_closed_form_and_superposition() -> None:
    synapse = ExponentialCurrent(tau_syn=4.0, dt=0.5, dtype=F64)
    synapse.bind(1, 1)
    weights = {0: 1.0, 3: 2.0, 7: -0.5}
    for step in range(20):
        arrived = torch.full((1, 1), weights.get(step, 0.0), dtype=F64)
        current, _ = synapse(arrived, torch.zeros(1, 1, dtype=F64))
        expected = sum(w * math.exp(-(step - s) * 0.5 / 4.0) for s, w in weights.items() if s <= step)
        assert current.item() == pytest.approx(expected, rel=1e-12)


def test_exponential_heterogeneous_tau() -> None:
    taus = torch.tensor([2.0, 5.0, 10.0], dtype=F64)
    synapse = ExponentialCurrent(tau_syn=taus, dt=1.0, dtype=F64)
    synapse.bind(3, 2)
    currents = impulse_response(synapse, 6, torch.ones(2, 3, dtype=F64))
    expected = torch.exp(-5.0 / taus).expand(2, 3)
    torch.testing.assert_close(currents[5], expected, rtol=1e-12, atol=0.0)


def test_exponential_batch_is_independent() -> None:
    synapse = ExponentialCurrent(tau_syn=5.0, dt=1.0)
    synapse.bind(2, 3)
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    currents = impulse_response(synapse, 4, weight)
    torch.testing.assert_close(currents[3], weight * math.exp(-3.0 / 5.0))


# --------------------------------------------------- DoubleExponentialCurrent


def test_double_exponential_closed_form() -> None:
    tau_rise, tau_decay, dt, weight = 2.0, 8.0, 0.25, 1.5
    synapse = DoubleExponentialCurrent(tau_rise, tau_decay, dt=dt, dtype=F64)
    synapse.bind(1, 1)
    currents = impulse_response(synapse, 200, torch.full((1, 1), weight, dtype=F64)).reshape(-1)
    t_peak = tau_rise * tau_decay * math.log(tau_decay / tau_rise) / (tau_decay - tau_rise)
    norm = 1.0 / (math.exp(-t_peak / tau_decay) - math.exp(-t_peak / tau_rise))
    for k in (0, 1, 5, 20, 150):
        expected = weight * norm * (math.exp(-k * dt / tau_decay) - math.exp(-k * dt / tau_rise))
        assert currents[k].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert currents[0].item() == 0.0
    # The continuous-time peak is the weight: t_peak = 8/3 ln 4 ≈ 3.70 ms, between grid points.
    assert currents.max().item() <= weight
    assert currents.max().item() == pytest.approx(weight, rel=1e-3)
    assert currents.argmax().item() in (math.floor(t_peak / dt), math.ceil(t_peak / dt))


def test_double_exponential_heterogeneous_peaks() -> None:
    tau_rise = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    tau_decay = torch.tensor([3.0, 5.0, 20.0], dtype=F64)
    synapse = DoubleExponentialCurrent(tau_rise, tau_decay, dt=0.01, dtype=F64)
    synapse.bind(3, 1)
    currents = impulse_response(synapse, 3000, torch.ones(1, 3, dtype=F64))
    torch.testing.assert_close(currents.amax(dim=0), torch.ones(1, 3, dtype=F64), rtol=1e-4, atol=0.0)


def test_double_exponential_rejects_rise_not_below_decay() -> None:
    with pytest.raises(ValueError, match="tau_rise must be below tau_decay for every neuron"):
        DoubleExponentialCurrent(5.0, 5.0)


# --------------------------------------------------------------- Conductance


def test_conductance_current_sign_and_value() -> None:
    synapse = Conductance(tau_syn=5.0, e_rev=0.0, dt=1.0, dtype=F64)
    synapse.bind(3, 1)
    v = torch.tensor([[-65.0, 0.0, 20.0]], dtype=F64)
    current, jump = synapse(torch.full((1, 3), 0.01, dtype=F64), v)
    assert jump is None
    # I = g (e_rev - v): depolarising below e_rev, zero at it, hyperpolarising above.
    torch.testing.assert_close(current, torch.tensor([[0.65, 0.0, -0.2]], dtype=F64), rtol=1e-12, atol=1e-15)
    current, _ = synapse(torch.zeros(1, 3, dtype=F64), v)
    torch.testing.assert_close(current, 0.01 * math.exp(-0.2) * (0.0 - v), rtol=1e-12, atol=1e-15)


def test_conductance_inhibitory_reversal() -> None:
    synapse = Conductance(tau_syn=10.0, e_rev=-80.0, dt=0.5, dtype=F64)
    synapse.bind(1, 1)
    current, _ = synapse(torch.full((1, 1), 0.05, dtype=F64), torch.full((1, 1), -60.0, dtype=F64))
    assert current.item() == pytest.approx(-1.0, rel=1e-12)
    assert synapse.g.item() == pytest.approx(0.05, rel=1e-12)


def test_conductance_drives_lif_toward_reversal() -> None:
    lif = LIF(1, dt=0.1, v_threshold=0.0, v_reset=-70.0, dtype=F64)
    synapse = Conductance(tau_syn=1e9, e_rev=-20.0, dt=0.1, dtype=F64)
    synapse.bind(1, 1)
    arrived = torch.full((1, 1), 1.0, dtype=F64)
    for _ in range(2000):
        current, _ = synapse(arrived, lif.v)
        lif.step(current)
        arrived = torch.zeros_like(arrived)
    # Steady state of tau dv/dt = -(v - v_rest) + R g (e_rev - v): (v_rest + R g e_rev) / (1 + R g),
    # with R g still within 2e-7 of 1 after 200 ms, so v is close to the mean of -65 and -20 mV.
    g = synapse.g.item()
    assert lif.v.item() == pytest.approx((-65.0 - 20.0 * g) / (1.0 + g), abs=1e-6)
    assert lif.v.item() == pytest.approx(-42.5, abs=1e-5)


# ------------------------------------------------------------------ mechanics


@pytest.mark.parametrize("device", DEVICES)
def test_state_follows_to_and_reset(device: str) -> None:
    synapse = DoubleExponentialCurrent(1.0, 4.0, dt=0.5).to(device=device, dtype=F64)
    synapse.bind((2, 2), 3)
    synapse(torch.ones(3, 2, 2, dtype=F64, device=device), torch.zeros(3, 2, 2, dtype=F64, device=device))
    assert synapse.decay_trace.dtype == F64
    assert synapse.decay_trace.device.type == device
    assert synapse.decay_trace.abs().sum().item() > 0
    synapse.reset_state()
    assert synapse.decay_trace.abs().sum().item() == 0.0
    synapse.set_batch_size(5)
    assert synapse.rise_trace.shape == (5, 2, 2)
    assert {"rise_trace", "decay_trace", "tau_rise", "tau_decay"} <= set(synapse.state_dict())


def test_gradient_flows_through_synapse_state() -> None:
    synapse = ExponentialCurrent(tau_syn=5.0, dt=1.0, dtype=F64)
    synapse.bind(1, 1)
    weight = torch.full((1, 1), 2.0, dtype=F64, requires_grad=True)
    total = sum(synapse(weight if k == 0 else torch.zeros(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64))[0] for k in range(3))
    total.sum().backward()
    assert weight.grad.item() == pytest.approx(1 + math.exp(-0.2) + math.exp(-0.4), rel=1e-12)


def test_extra_repr_shows_parameters() -> None:
    text = repr(Conductance(tau_syn=torch.ones(4), e_rev=-80.0, dt=0.1))
    assert "tau_syn=<tensor (4,)> ms" in text
    assert "e_rev=-80 mV" in text
    assert "dt=0.1" in text
    assert repr(Delta(mode="current")) == "Delta(mode='current')"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ExponentialCurrent(tau_syn=0.0), "tau_syn of ExponentialCurrent must be above 0 ms"),
        (lambda: ExponentialCurrent(tau_syn=torch.tensor([1.0, -2.0])), "tau_syn of ExponentialCurrent must be above 0"),
        (lambda: Conductance(e_rev=float("inf")), "e_rev of Conductance must be finite"),
        (lambda: DoubleExponentialCurrent(tau_rise=-1.0), "tau_rise of DoubleExponentialCurrent must be above 0"),
        (lambda: ExponentialCurrent(dt=-1.0), "dt must be a finite step length above 0 ms"),
    ],
)
def test_invalid_parameters_rejected(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_bind_errors() -> None:
    synapse = ExponentialCurrent(tau_syn=torch.ones(3), dt=1.0)
    with pytest.raises(ValueError, match=r"tau_syn of ExponentialCurrent \(ms\) must broadcast to the postsynaptic shape \(4,\)"):
        synapse.bind(4, 1)
    with pytest.raises(ValueError, match="built with dt = 1.0 ms but bound with dt = 0.5 ms"):
        synapse.bind(3, 1, dt=0.5)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        synapse.bind(3, 0)


def test_forward_errors() -> None:
    synapse = ExponentialCurrent(dt=1.0)
    with pytest.raises(ValueError, match=r"ExponentialCurrent is not bound: call bind\(post_shape, batch_size\) first"):
        synapse(torch.zeros(1, 2), torch.zeros(1, 2))
    synapse.bind(2, 1)
    with pytest.raises(ValueError, match=r"must have shape \(batch_size, \*post_shape\) = \(1, 2\), got \(2, 2\)"):
        synapse(torch.zeros(2, 2), torch.zeros(2, 2))
    unknown_dt = ExponentialCurrent()
    unknown_dt.bind(2, 1)
    with pytest.raises(ValueError, match="ExponentialCurrent has no step length"):
        unknown_dt(torch.zeros(1, 2), torch.zeros(1, 2))
