"""The native CPU path (ember.native) against the PyTorch path.

Every comparison builds the same network twice, once with
``engine="torch"`` and once with ``engine="native"``, runs both and compares
spike events, neuron, synapse and rule state, ring buffers and weights.

Tolerances: the kernels repeat the PyTorch path's floating point operations
in the same order and precision (factors such as ``exp(-dt / tau)`` are
computed by torch and handed over), so most comparisons are exact. The
exceptions are sums that PyTorch leaves to a matrix product: a dense
connection without delays with 5 % or more of its inputs active, and the
STDP potentiation sum over a batch of more than one sample. There the
order of additions differs, and the comparisons use float64 networks and a
relative tolerance of 1e-12 (float64 rounding is about 1e-16 per operation,
so 1e-12 leaves room for a few hundred steps of accumulated differences).
"""

from __future__ import annotations

import math

import pytest
import torch

from ember import (
    LIF,
    AdaptiveLIF,
    Conductance,
    CurrentInput,
    Delta,
    Dense,
    DoubleExponentialCurrent,
    EncodedInput,
    ExponentialCurrent,
    Izhikevich,
    Lateral,
    Network,
    NetworkError,
    OneToOne,
    PoissonEncoder,
    SpikeCountMonitor,
    SpikeGenerator,
    SpikeMonitor,
    StateMonitor,
)
from ember.learning import STDP, DiehlCookSTDP, HardBounds, Homeostasis, SoftBounds, WeightNormalization
from ember.native import build, plan, runner
from ember.sources import PatternInput

# Only a missing compiler skips these tests: kernels that fail to build fail them.
pytestmark = pytest.mark.skipif(
    build.find_compiler() is None or not build.enabled(), reason="no C compiler for the native kernels"
)

EXACT = {"rtol": 0.0, "atol": 0.0}
SUMMED = {"rtol": 1e-12, "atol": 1e-12}
# Deferred potentiation adds a weight's increments from sums of many steps, so weights, and the membrane
# potentials they drive, differ from the step-by-step ones by a few units in the last place.
DEFERRED = {"rtol": 1e-6, "atol": 2e-6}


@pytest.fixture(autouse=True)
def step_by_step_potentiation(monkeypatch):
    """Keep potentiation step by step, so that native weights equal PyTorch's bit for bit.

    The tests of deferred potentiation switch it back on.
    """
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", False)


# --------------------------------------------------------------------------- helpers


def twin_networks(build_network, *args, **kwargs) -> tuple[Network, Network]:
    """Build the same network for each engine from the same random weights."""
    torch.manual_seed(7)
    reference = build_network("torch", *args, **kwargs)
    torch.manual_seed(7)
    native = build_network("native", *args, **kwargs)
    return reference, native


def state_tensors(network: Network) -> dict[str, torch.Tensor]:
    """Every buffer and parameter except monitor buffers, which are compared through their events."""
    tensors = {}
    for name, tensor in list(network.named_buffers()) + list(network.named_parameters()):
        if name.startswith("monitors."):
            continue
        tensors[name] = tensor.detach()
    return tensors


def assert_same_run(reference: Network, native: Network, tolerance: dict) -> None:
    """Assert equal spike monitors and counts, and state within ``tolerance``."""
    for name, monitor in reference.monitors.items():
        other = native.monitors[name]
        if isinstance(monitor, SpikeMonitor):
            expected, actual = monitor.spike_events(), other.spike_events()
            for field in ("step", "index", "sample"):
                assert getattr(expected, field).tolist() == getattr(actual, field).tolist(), f"{name}.{field}"
        elif isinstance(monitor, SpikeCountMonitor):
            torch.testing.assert_close(other.counts, monitor.counts, **EXACT)
    expected, actual = state_tensors(reference), state_tensors(native)
    assert expected.keys() == actual.keys()
    for name in expected:
        if expected[name].is_floating_point():
            torch.testing.assert_close(actual[name], expected[name], **tolerance, msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert torch.equal(actual[name], expected[name]), name
    assert int(native.step_count) == int(reference.step_count)


def spike_total(network: Network, monitor: str = "count") -> int:
    return int(network.monitors[monitor].counts.sum())


def poisson_input(network: Network, name: str, size: int, rate_hz: float | torch.Tensor) -> EncodedInput:
    source = network.add(name, EncodedInput(size, PoissonEncoder(dt=network.dt), network.dt))
    rates = rate_hz if isinstance(rate_hz, torch.Tensor) else torch.full((network.batch_size, size), float(rate_hz))
    source.set_data(rates.to(source.dtype))
    return source


def forward_network(engine, *, batch=1, dtype=torch.float32, delays=None, dt=1.0, n=40, inputs=200, rate=30.0, delay_mode="linear"):
    """Poisson inputs -> Dense (optionally with delays) -> LIF, with spike and count monitors."""
    network = Network(dt=dt, batch_size=batch, seed=11, engine=engine)
    poisson_input(network, "input", inputs, rate)
    network.add("output", LIF(n, dt=dt, tau_mem=10.0, refractory_period=2 * dt))
    options = {}
    if delays is not None:
        options = {"delay": delays, "delay_mode": delay_mode}
    weight = torch.rand(inputs, n) * 2.5
    network.connect("link", "input", "output", Dense(inputs, n, weight, dt=dt, **options))
    network.add_monitor("spikes", SpikeMonitor("output"))
    network.add_monitor("count", SpikeCountMonitor("output"))
    network.to(dtype)
    return network


# --------------------------------------------------------------------------- generator


def test_kernels_build_where_a_compiler_exists():
    assert runner.kernels() is not None, build.failure()


def test_uniform_draws_match_torch_rand():
    library = runner.kernels().library
    generator = torch.Generator()
    for dtype, draw in ((torch.float32, library.ember_uniform_f32), (torch.float64, library.ember_uniform_f64)):
        for seed, count in ((3, 5), (2**40 + 11, 1000), (987654321, 3000)):
            generator.manual_seed(seed)
            expected = torch.rand(count, generator=generator, dtype=dtype)
            drawn = torch.empty(count, dtype=dtype)
            draw(seed, count, drawn.data_ptr())
            assert torch.equal(drawn, expected), (dtype, seed, count)


def test_native_draws_are_trusted_here():
    assert runner.kernels().native_rng


# --------------------------------------------------------------------------- forward networks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_dense_matches_torch(dtype, batch):
    reference, native = twin_networks(forward_network, batch=batch, dtype=dtype)
    reference.run(120)
    native.run(120)
    assert spike_total(reference) > 20
    assert_same_run(reference, native, EXACT)


@pytest.mark.parametrize("batch", [1, 3])
def test_integer_delays_match_torch(batch):
    delays = torch.randint(0, 6, (200, 40)).float()
    reference, native = twin_networks(forward_network, batch=batch, delays=delays)
    reference.run(100)
    native.run(100)
    assert spike_total(reference) > 20
    assert bool(reference.connections["link"].in_flight.any())
    assert_same_run(reference, native, EXACT)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fractional_delays_match_torch(mode, dtype):
    delays = torch.rand(200, 40) * 3.0
    reference, native = twin_networks(forward_network, batch=3, dtype=dtype, delays=delays, dt=0.5, delay_mode=mode, rate=60.0)
    reference.run(150)
    native.run(150)
    assert spike_total(reference) > 20
    assert_same_run(reference, native, EXACT)


def test_dense_inputs_within_sum_tolerance():
    # 30 % of the inputs spike each step, so PyTorch sums with a matrix product.
    reference, native = twin_networks(forward_network, batch=2, dtype=torch.float64, rate=300.0, n=30, inputs=50)
    for network in (reference, native):
        network.connections["link"].weight.data.mul_(0.2)
    reference.run(80)
    native.run(80)
    assert spike_total(reference) > 20
    assert_same_run(reference, native, SUMMED)


def synapse_network(engine, *, dtype=torch.float64, batch=2):
    """Four synapse types on four connections into one population, plus bias, an injected current and a relay."""
    dt = 0.5
    network = Network(dt=dt, batch_size=batch, seed=5, engine=engine)
    poisson_input(network, "input", 60, 80.0)
    network.add("hidden", LIF(30, dt=dt, tau_mem=8.0, v_rest=-65.0, v_reset=-70.0, v_threshold=-55.0, refractory_period=1.5))
    network.add("relay", LIF(30, dt=dt, tau_mem=torch.linspace(5.0, 15.0, 30), resistance=2.0))
    weight = lambda scale: torch.rand(60, 30) * scale  # noqa: E731
    network.connect("voltage", "input", "hidden", Dense(60, 30, weight(1.5), dt=dt, bias=0.05))
    network.connect("charge", "input", "hidden", Dense(60, 30, weight(0.4), dt=dt, synapse=Delta("current", dt=dt)))
    network.connect("exponential", "input", "hidden", Dense(60, 30, weight(0.3), dt=dt, synapse=ExponentialCurrent(tau_syn=torch.linspace(2.0, 6.0, 30), dt=dt), delay=torch.rand(60, 30) * 2.0))
    network.connect("conductance", "input", "hidden", Dense(60, 30, weight(0.004), dt=dt, synapse=Conductance(tau_syn=3.0, e_rev=0.0, dt=dt)))
    network.connect("two_exponential", "input", "hidden", Dense(60, 30, weight(0.5), dt=dt, synapse=DoubleExponentialCurrent(tau_rise=1.0, tau_decay=4.0, dt=dt)))
    network.connect("relay_link", "hidden", "relay", OneToOne(30, 20.0, dt=dt, delay=torch.rand(30) * 2.0))
    network.connect("inhibition", "hidden", "hidden", Lateral(30, torch.full((30, 30), -0.5), dt=dt, synapse=Conductance(tau_syn=5.0, e_rev=-80.0, dt=dt)))
    network.add_current("drive", "relay", CurrentInput(30, torch.linspace(0.0, 8.0, 30), dt, start_ms=10.0, stop_ms=40.0, batch_size=batch))
    network.add_current("steady", "hidden", CurrentInput(30, 1.0, dt, batch_size=batch))
    for name in ("hidden", "relay"):
        network.add_monitor(f"{name}_spikes", SpikeMonitor(name))
        network.add_monitor(f"{name}_count", SpikeCountMonitor(name))
    network.to(dtype)
    return network


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_synapse_and_current_matches_torch(dtype):
    reference, native = twin_networks(synapse_network, dtype=dtype)
    reference.run(160)
    native.run(160)
    assert spike_total(reference, "hidden_count") > 20
    assert spike_total(reference, "relay_count") > 5
    assert_same_run(reference, native, EXACT)


def adaptive_network(engine, *, batch=3, theta_shared=True, adapt=True, dtype=torch.float32):
    network = Network(dt=1.0, batch_size=batch, seed=2, engine=engine)
    poisson_input(network, "input", 100, torch.rand(batch, 100) * 80.0)
    network.add("output", AdaptiveLIF(25, dt=1.0, tau_mem=20.0, theta_plus=0.4, tau_theta=50.0, theta_shared=theta_shared, adapt=adapt, refractory_period=3.0))
    network.connect("link", "input", "output", Dense(100, 25, torch.rand(100, 25) * 3.0, dt=1.0))
    network.add_monitor("count", SpikeCountMonitor("output"))
    network.add_monitor("spikes", SpikeMonitor("output"))
    network.to(dtype)
    return network


@pytest.mark.parametrize("theta_shared", [True, False])
@pytest.mark.parametrize("adapt", [True, False])
def test_adaptive_threshold_matches_torch(theta_shared, adapt):
    reference, native = twin_networks(adaptive_network, theta_shared=theta_shared, adapt=adapt)
    if not adapt:
        for network in (reference, native):
            network.nodes["output"].theta.fill_(0.7)
    reference.run(150)
    native.run(150)
    assert spike_total(reference) > 20
    if adapt:
        assert float(reference.nodes["output"].theta.max()) > 0.5
    assert_same_run(reference, native, EXACT)


# --------------------------------------------------------------------------- learning


def learning_network(engine, *, batch=1, rule="stdp", dtype=torch.float32, trace="nearest", reduce="sum", bounds=None, w_max=1.0, n=30):
    """The Diehl & Cook layout: Poisson -> Dense (learned) -> AdaptiveLIF with lateral inhibition."""
    network = Network(dt=1.0, batch_size=batch, seed=9, engine=engine)
    rates = torch.rand(batch, 150) * 60.0
    poisson_input(network, "input", 150, rates)
    network.add("output", AdaptiveLIF(n, dt=1.0, tau_mem=30.0, v_threshold=-55.0, theta_plus=0.1, refractory_period=2.0))
    network.connect("link", "input", "output", Dense(150, n, torch.rand(150, n) * 0.9, dt=1.0, w_min=0.0, w_max=w_max))
    network.connect("inhibition", "output", "output", Lateral(n, torch.full((n, n), -3.0), dt=1.0))
    if rule == "stdp":
        chosen = STDP(a_plus=0.02, a_minus=0.015, tau_plus=15.0, tau_minus=25.0, trace=trace, reduce=reduce, bounds=bounds)
    else:
        chosen = DiehlCookSTDP(nu_pre=0.002, nu_post=0.03, reduce=reduce, bounds=bounds)
    network.add_rule("learn", chosen, "link")
    network.add_monitor("count", SpikeCountMonitor("output"))
    network.add_monitor("spikes", SpikeMonitor("output"))
    network.to(dtype)
    return network


@pytest.mark.parametrize(
    "options",
    [
        {"rule": "stdp", "trace": "nearest", "reduce": "sum"},
        {"rule": "stdp", "trace": "all_to_all", "reduce": "mean"},
        {"rule": "diehl_cook", "reduce": "sum"},
        {"rule": "stdp", "bounds": HardBounds(0.05, 0.8)},
        {"rule": "diehl_cook", "bounds": SoftBounds()},
    ],
    ids=["stdp-nearest", "stdp-all-to-all-mean", "diehl-cook", "hard-bounds", "soft-bounds"],
)
def test_learning_single_sample_matches_torch_exactly(options):
    reference, native = twin_networks(learning_network, **options)
    initial = reference.connections["link"].weight.detach().clone()
    reference.run(150)
    native.run(150)
    assert spike_total(reference) > 10
    assert not torch.equal(reference.connections["link"].weight, initial)
    assert_same_run(reference, native, EXACT)


@pytest.mark.parametrize("rule", ["stdp", "diehl_cook"])
def test_learning_batch_matches_torch(rule):
    reference, native = twin_networks(learning_network, batch=3, rule=rule, dtype=torch.float64, reduce="mean")
    reference.run(120)
    native.run(120)
    assert spike_total(reference) > 10
    assert_same_run(reference, native, SUMMED)


def test_batch_learning_on_a_large_matrix_matches_torch():
    # 1000 x 2100 float64 weights are past the size that the kernels potentiate in blocks of columns.
    def build(engine):
        network = Network(dt=1.0, batch_size=2, seed=8, engine=engine)
        poisson_input(network, "input", 1000, torch.rand(2, 1000) * 40.0)
        network.add("output", LIF(2100, dt=1.0, tau_mem=10.0, refractory_period=2.0))
        network.connect("link", "input", "output", Dense(1000, 2100, torch.rand(1000, 2100) * 0.2, dt=1.0, w_min=0.0, w_max=1.0))
        network.add_rule("learn", STDP(a_plus=0.02, a_minus=0.015, tau_plus=15.0, tau_minus=25.0, reduce="sum"), "link")
        network.add_monitor("count", SpikeCountMonitor("output"))
        network.add_monitor("spikes", SpikeMonitor("output"))
        network.to(torch.float64)
        return network

    reference, native = twin_networks(build)
    reference.run(30)
    native.run(30)
    assert spike_total(reference) > 100
    assert_same_run(reference, native, SUMMED)


def test_out_of_bounds_weights_clamped_as_torch():
    reference, native = twin_networks(learning_network, w_max=0.5)
    for value in (0.9, -0.2):
        for network in (reference, native):
            with torch.no_grad():
                network.connections["link"].weight[::7] = value  # outside [0, 0.5], as a manual edit can leave them
        reference.run(30)
        native.run(30)
        weight = native.connections["link"].weight.detach()
        assert float(weight.min()) >= 0.0
        assert float(weight.max()) <= 0.5
        assert_same_run(reference, native, EXACT)


def test_disabled_and_between_sample_rules_run_natively():
    network = learning_network("native")
    network.add_rule("normalise", WeightNormalization(20.0), "link")
    network.add_rule("homeostasis", Homeostasis(5.0, 0.01), "link")
    network.rules["homeostasis"].enabled = False
    assert runner.unsupported_reason(network) is None
    network.learning(False)
    weight = network.connections["link"].weight.detach().clone()
    network.run(50)
    assert torch.equal(network.connections["link"].weight, weight)
    assert spike_total(network) > 0


# --------------------------------------------------------------------------- mixing and chunking


def test_chunks_and_torch_steps_mix_with_native_runs():
    reference, native = twin_networks(learning_network, batch=1)
    reference.run(90)
    native.run(17)
    native.step()
    native.step()
    native.run(1)
    native.engine = "torch"
    native.run(9)
    native.engine = "native"
    native.run(61)
    assert int(native.step_count) == 90
    assert_same_run(reference, native, EXACT)


def test_samples_with_reset_between_them_match_torch():
    reference, native = twin_networks(learning_network, batch=2, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(3, 2, 150, generator=generator) * 60.0
    for network in (reference, native):
        for sample in range(3):
            network.reset_state()
            network.sample_key.fill_(sample)
            network.nodes["input"].set_data(images[sample].to(network.nodes["input"].dtype))
            network.run(40)
    assert_same_run(reference, native, SUMMED)


def test_callback_sees_every_step():
    network = forward_network("native")
    seen = []
    network.run(5, callback=seen.append)
    assert seen == [0, 1, 2, 3, 4]
    assert int(network.step_count) == 5


def test_callback_that_adds_unsupported_part_continues_in_torch():
    reference, native = twin_networks(learning_network)
    reference.rules["learn"].enabled = False
    native.rules["learn"].enabled = False

    def switch_on(step: int, network: Network) -> None:
        if step == 3:
            network.rules["learn"].enabled = True
            network.add_monitor("voltage", StateMonitor("output", "v"))

    reference.run(10, callback=lambda step: switch_on(step, reference))
    native.run(10, callback=lambda step: switch_on(step, native))
    assert int(native.step_count) == 10
    assert int(native.monitors["voltage"].count) == 6
    assert_same_run(reference, native, EXACT)


# --------------------------------------------------------------------------- delay lines


def lateral_delay_network(engine, *, fractional=False, dtype=torch.float32, batch=2, link_delay=None):
    """Poisson -> Dense with delays (``link_delay`` ms for every synapse, if given) -> LIF, with lateral inhibition through delays too."""
    dt = 0.5 if fractional else 1.0
    network = Network(dt=dt, batch_size=batch, seed=3, engine=engine)
    poisson_input(network, "input", 120, 50.0)
    network.add("output", LIF(25, dt=dt, tau_mem=10.0, refractory_period=2 * dt))
    scale = 3.0 if fractional else 6.0
    delays = torch.rand(120, 25) * scale if fractional else torch.randint(0, 7, (120, 25)).float()
    if link_delay is not None:
        delays = torch.full((120, 25), link_delay)
    network.connect("link", "input", "output", Dense(120, 25, torch.rand(120, 25) * 2.0, dt=dt, delay=delays))
    lateral_delays = torch.rand(25, 25) * 2.0 if fractional else torch.randint(1, 4, (25, 25)).float()
    network.connect("inhibition", "output", "output", Lateral(25, torch.full((25, 25), -4.0), dt=dt, delay=lateral_delays))
    network.add_monitor("spikes", SpikeMonitor("output"))
    network.add_monitor("count", SpikeCountMonitor("output"))
    network.to(dtype)
    return network


@pytest.mark.parametrize("fractional", [False, True])
def test_lateral_and_dense_delay_lines_match_torch(fractional):
    reference, native = twin_networks(lateral_delay_network, fractional=fractional)
    reference.run(160)
    native.run(160)
    assert spike_total(reference) > 30
    assert bool(native.connections["inhibition"].in_flight.any())
    assert_same_run(reference, native, EXACT)


def test_delay_lines_carry_spikes_in_flight_across_chunks_and_torch_steps():
    # Runs shorter than the 7 slots, runs across the point where a line moves back, and PyTorch steps in between.
    reference, native = twin_networks(lateral_delay_network)
    reference.run(120)
    for steps in (1, 2, 3, 5, 7, 9, 13):
        native.run(steps)
    native.engine = "torch"
    native.run(4)
    native.engine = "native"
    native.run(120 - int(native.step_count))
    assert int(native.step_count) == 120
    assert_same_run(reference, native, EXACT)


@pytest.mark.parametrize("batch", [1, 3])
def test_uniform_delays_shifted_ring_slot(batch):
    # One delay for every synapse: the kernels add each row into the slot that many steps ahead.
    reference, native = twin_networks(lateral_delay_network, batch=batch, link_delay=4.0)
    reference.run(130)
    native.run(50)
    native.run(80)
    conns = plan_of(native).conns
    shifts = {name: (conns[k].shift, bool(conns[k].offset)) for k, name in enumerate(native.connections)}
    assert shifts == {"link": (4, False), "inhibition": (0, True)}
    assert spike_total(reference) > 30
    assert_same_run(reference, native, EXACT)


def test_lateral_one_step_delay_without_offsets():
    network = Network(dt=1.0, seed=0, engine="native")
    poisson_input(network, "input", 40, 80.0)
    network.add("output", LIF(20, dt=1.0, tau_mem=10.0))
    network.connect("link", "input", "output", Dense(40, 20, torch.rand(40, 20) * 3.0, dt=1.0))
    network.connect("inhibition", "output", "output", Lateral(20, torch.full((20, 20), -2.0), dt=1.0))
    network.run(5)
    struct = plan_of(network).conns[1]
    assert (struct.shift, bool(struct.offset), bool(struct.fraction)) == (1, False, False)


# --------------------------------------------------------------------------- deferred potentiation


def plan_of(network: Network) -> plan.Plan:
    return runner._plans[network]


@pytest.mark.parametrize("trace", ["nearest", "all_to_all"])
def test_deferred_potentiation_matches_step_by_step_updates(monkeypatch, trace):
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    reference, native = twin_networks(learning_network, trace=trace, n=40)
    # With tau_plus = 15 ms the kernels keep 8 spans of 32 steps, so in 500 steps 8 spans leave the ring.
    reference.run(500)
    native.run(500)
    assert plan_of(native).rules[0].defer == 1
    assert spike_total(reference) > 100
    initial = twin_networks(learning_network, trace=trace, n=40)[0].connections["link"].weight.detach()
    assert float((reference.connections["link"].weight.detach() - initial).abs().max()) > 0.05
    assert_same_run(reference, native, DEFERRED)


def test_deferred_potentiation_in_chunks_and_between_torch_steps(monkeypatch):
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    reference, native = twin_networks(learning_network)
    reference.run(400)
    for steps in (1, 17, 230):
        native.run(steps)
    native.engine = "torch"
    native.run(12)
    native.engine = "native"
    native.run(400 - int(native.step_count))
    assert_same_run(reference, native, DEFERRED)


def closed_form_network(engine, *, w_max, drive_ms=(2.0, 9.0), tau_plus=10.0, pre_ms=(0.0,), a_minus=0.04):
    """Input 'pre' spikes at ``pre_ms`` (0 ms); a strong 'drive' input makes the output fire at ``drive_ms`` (2 and 9 ms)."""
    network = Network(dt=1.0, seed=1, engine=engine)
    network.add("pre", SpikeGenerator(1, times_ms=list(pre_ms), indices=[0] * len(pre_ms), dt=1.0))
    network.add("drive", SpikeGenerator(1, times_ms=list(drive_ms), indices=[0] * len(drive_ms), dt=1.0))
    network.add("output", LIF(1, dt=1.0, tau_mem=10.0, refractory_period=1.0))
    network.connect("learned", "pre", "output", Dense(1, 1, torch.full((1, 1), 0.1), dt=1.0, w_min=0.0, w_max=w_max))
    network.connect("driver", "drive", "output", Dense(1, 1, torch.full((1, 1), 50.0), dt=1.0))
    network.add_rule("learn", STDP(a_plus=0.05, a_minus=a_minus, tau_plus=tau_plus, tau_minus=10.0, trace="nearest"), "learned")
    network.add_monitor("spikes", SpikeMonitor("output"))
    return network


@pytest.mark.parametrize("w_max", [1.0, 0.15])
def test_deferred_potentiation_closed_form(monkeypatch, w_max):
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    network = closed_form_network("native", w_max=w_max)
    # tau_plus = 10 ms gives 13 spans of 21 steps, so the first span leaves the ring at step 273.
    network.run(300)
    assert plan_of(network).rules[0].defer == 1
    assert network.monitors["spikes"].spike_events().step.tolist() == [2, 9]
    # The presynaptic trace is 1 at step 0 and decays by exp(-1/10) per step; each output spike adds a_plus times it.
    decay = math.exp(-0.1)
    expected = min(0.1 + 0.05 * (decay**2 + decay**9), w_max)
    assert float(network.connections["learned"].weight.detach()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("engine", ["native", "torch"])
def test_deferred_potentiation_second_input_spike(monkeypatch, engine):
    # The input spikes again at 5 ms, after the output spike at 2 ms of the same span of steps. From then
    # on the row owes at its new trace, 1 at 5 ms, so the output spike at 9 ms adds a_plus decay^4.
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    network = closed_form_network(engine, w_max=1.0, pre_ms=(0.0, 5.0), a_minus=0.0)
    network.run(60)
    if engine == "native":
        assert plan_of(network).rules[0].defer == 1
    assert network.monitors["spikes"].spike_events().step.tolist() == [2, 9]
    decay = math.exp(-0.1)
    expected = 0.1 + 0.05 * (decay**2 + decay**4)
    assert float(network.connections["learned"].weight.detach()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("calls", [(420,), (100, 200, 120)])
def test_deferred_potentiation_across_spans(monkeypatch, calls):
    # The input spikes only at 0 ms. With tau_plus = 100 ms the kernels keep 8 spans of 32 steps, so at
    # step 256 the row's span leaves the ring: the row pays and owes again from there, through calls of any length.
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    drive_ms = (2.0, 130.0, 260.0, 300.0, 400.0)
    network = closed_form_network("native", w_max=10.0, drive_ms=drive_ms, tau_plus=100.0)
    for steps in calls:
        network.run(steps)
    assert plan_of(network).rules[0].defer == 1
    assert network.monitors["spikes"].spike_events().step.tolist() == [2, 130, 260, 300, 400]
    decay = math.exp(-0.01)
    expected = 0.1 + 0.05 * sum(decay**t for t in (2, 130, 260, 300, 400))
    assert float(network.connections["learned"].weight.detach()) == pytest.approx(expected, rel=1e-6)


def test_deferred_potentiation_on_lateral_and_delayed_connections(monkeypatch):
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)

    def build(engine):
        network = Network(dt=1.0, seed=6, engine=engine)
        poisson_input(network, "input", 100, 40.0)
        network.add("output", LIF(30, dt=1.0, tau_mem=20.0, refractory_period=2.0))
        delays = torch.randint(0, 5, (100, 30)).float()
        network.connect("link", "input", "output", Dense(100, 30, torch.rand(100, 30) * 3.0, dt=1.0, delay=delays, w_min=0.0, w_max=3.0))
        network.connect("recurrent", "output", "output", Lateral(30, torch.rand(30, 30) * 0.5, dt=1.0, w_min=0.0, w_max=1.0))
        rule = dict(a_plus=0.01, a_minus=0.012, tau_plus=20.0, tau_minus=20.0, trace="nearest")
        network.add_rule("learn_input", STDP(timing="emission", **rule), "link")
        network.add_rule("learn_recurrent", STDP(timing="emission", **rule), "recurrent")
        network.add_monitor("spikes", SpikeMonitor("output"))
        network.add_monitor("count", SpikeCountMonitor("output"))
        return network

    reference, native = twin_networks(build)
    reference.run(350)
    native.run(350)
    assert [struct.defer for struct in plan_of(native).rules[:2]] == [1, 1]
    assert spike_total(reference) > 100
    assert torch.count_nonzero(torch.diagonal(native.connections["recurrent"].weight)) == 0
    assert_same_run(reference, native, DEFERRED)


def test_defer_switch_is_read_at_each_run(monkeypatch):
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    network = learning_network("native")
    network.run(plan.DEFER_MIN_STEPS)
    assert plan_of(network).rules[0].defer == 1
    monkeypatch.setenv("EMBER_NATIVE_DEFER", "0")
    network.run(plan.DEFER_MIN_STEPS)
    assert plan_of(network).rules[0].defer == 0


def test_short_runs_potentiate_step_by_step(monkeypatch):
    # Each deferring call ends with a pass over every weight, so runs shorter than DEFER_MIN_STEPS do not defer.
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    network = learning_network("native")
    network.run(plan.DEFER_MIN_STEPS - 1)
    assert plan_of(network).rules[0].defer == 0
    network.run(plan.DEFER_MIN_STEPS)
    assert plan_of(network).rules[0].defer == 1
    seen = []
    network.run(40, callback=seen.append)
    assert plan_of(network).rules[0].defer == 0
    assert len(seen) == 40


@pytest.mark.parametrize(
    "case",
    ["batch", "hard_bounds", "diehl_cook", "two_rules", "out_of_bounds", "switched_off"],
)
def test_potentiation_is_deferred_only_where_it_is_exact(monkeypatch, case):
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", case != "switched_off")
    options = {"batch": {"batch": 2}, "hard_bounds": {"bounds": HardBounds(0.0, 0.8)}, "diehl_cook": {"rule": "diehl_cook"}}
    network = learning_network("native", **options.get(case, {}))
    if case == "two_rules":
        network.add_rule("again", STDP(a_plus=0.01, a_minus=0.01, tau_plus=10.0, tau_minus=10.0), "link")
    if case == "out_of_bounds":
        with torch.no_grad():
            network.connections["link"].weight[0, 0] = 1.5
    network.run(plan.DEFER_MIN_STEPS)
    assert plan_of(network).rules[0].defer == 0
    if case == "out_of_bounds":
        # The first run brought every weight into bounds, so the next one defers.
        network.run(plan.DEFER_MIN_STEPS)
        assert plan_of(network).rules[0].defer == 1


# --------------------------------------------------------------------------- arrival timing


def arrival_network(engine, *, trace="nearest", recurrent=False, batch=1, delays=None, bounds=None):
    """Poisson -> Dense with whole-step delays -> LIF, pair STDP timing each input at its arrival."""
    network = Network(dt=1.0, batch_size=batch, seed=12, engine=engine)
    poisson_input(network, "input", 80, 40.0)
    network.add("output", LIF(30, dt=1.0, tau_mem=15.0, refractory_period=2.0))
    delays = torch.randint(0, 9, (80, 30)).float() if delays is None else delays
    network.connect("link", "input", "output", Dense(80, 30, torch.rand(80, 30) * 2.0, dt=1.0, delay=delays, w_min=0.0, w_max=1.5))
    rule = dict(a_plus=0.02, a_minus=0.015, tau_plus=15.0, tau_minus=25.0, trace=trace, bounds=bounds)
    network.add_rule("learn", STDP(**rule), "link")
    if recurrent:
        network.connect("recurrent", "output", "output", Lateral(30, torch.rand(30, 30) * 0.5, dt=1.0, delay=torch.randint(1, 4, (30, 30)).float(), w_min=0.0, w_max=1.0))
        network.add_rule("learn_recurrent", STDP(**rule), "recurrent")
    network.add_monitor("spikes", SpikeMonitor("output"))
    network.add_monitor("count", SpikeCountMonitor("output"))
    return network


@pytest.mark.parametrize("trace", ["nearest", "all_to_all"])
def test_arrival_timed_stdp_matches_torch(trace):
    reference, native = twin_networks(arrival_network, trace=trace)
    initial = reference.connections["link"].weight.detach().clone()
    reference.run(200)
    native.run(200)
    assert plan_of(native).rules[0].arrival == 1
    assert spike_total(reference) > 50
    assert float((reference.connections["link"].weight.detach() - initial).abs().max()) > 0.01
    # The per-synapse traces and the arrival tracker's history, last step and reported spikes are compared too.
    assert_same_run(reference, native, EXACT)


def test_arrival_stdp_shared_delay_matches_torch():
    reference, native = twin_networks(arrival_network, delays=torch.full((80, 30), 5.0))
    reference.run(150)
    native.run(150)
    assert (plan_of(native).rules[0].arrival, plan_of(native).conns[0].shift) == (1, 5)
    assert spike_total(reference) > 50
    assert_same_run(reference, native, EXACT)


def test_arrival_tracker_state_passes_between_engines():
    reference, native = twin_networks(arrival_network, recurrent=True)
    reference.run(160)
    for steps in (3, 17, 40):
        native.run(steps)
    native.engine = "torch"
    native.run(6)
    native.engine = "native"
    native.run(160 - int(native.step_count))
    assert [struct.arrival for struct in plan_of(native).rules[:2]] == [1, 1]
    assert_same_run(reference, native, EXACT)


def test_arrival_timed_stdp_clamps_out_of_bounds_weights_as_torch():
    reference, native = twin_networks(arrival_network, bounds=HardBounds(0.0, 1.2))
    for network in (reference, native):
        with torch.no_grad():
            network.connections["link"].weight[::5] = 1.4  # inside the connection's bounds, outside the rule's
    reference.run(80)
    native.run(80)
    assert float(native.connections["link"].weight.detach().max()) <= float(torch.tensor(1.2))  # 1.2 in float32
    assert_same_run(reference, native, EXACT)


@pytest.mark.parametrize("trace", ["nearest", "all_to_all"])
def test_arrival_timed_stdp_with_a_batch_matches_torch(trace):
    reference, native = twin_networks(arrival_network, trace=trace, batch=3, recurrent=True)
    reference.run(60)
    native.run(25)
    native.engine = "torch"
    native.run(5)
    native.engine = "native"
    native.run(30)
    assert plan_of(native).rules[0].arrival == 1
    assert spike_total(reference) > 50
    # The pair sums over the samples may add in another order than torch's sum.
    assert_same_run(reference, native, {"rtol": 1e-6, "atol": 1e-6})


def test_arrival_timed_potentiation_is_not_deferred(monkeypatch):
    # A row goes out when its input spikes, before the spike reaches the synapses. Deferred to arrivals,
    # potentiation would leave the row unpaid when it goes out, so arrival timing updates at every step.
    monkeypatch.setattr(plan, "DEFER_POTENTIATION", True)
    network = arrival_network("native")
    network.run(plan.DEFER_MIN_STEPS)
    assert plan_of(network).rules[0].arrival == 1
    assert plan_of(network).rules[0].defer == 0


@pytest.mark.parametrize("case", ["plain", "recurrent", "hard_bounds", "sum"])
def test_batch_arrival_steps_equal_dense_pass(case):
    """Calls of 16 steps or more keep a batch's traces as arrival steps; shorter ones decay every trace."""
    options = {"recurrent": {"recurrent": True}, "hard_bounds": {"bounds": HardBounds(0.0, 1.5)}}.get(case, {})
    torch.manual_seed(7)
    lazy = arrival_network("native", batch=4, **options)
    torch.manual_seed(7)
    dense = arrival_network("native", batch=4, **options)
    if case == "sum":
        for network in (lazy, dense):
            network.rules["learn"].reduce = "sum"
    lazy.run(40)
    assert plan_of(lazy).rules[0].arrival_steps == 40
    for _ in range(5):
        dense.run(8)
    assert plan_of(dense).rules[0].arrival_steps == 0
    # The next call switches to arrival steps from traces that the dense pass left.
    for network in (lazy, dense):
        network.run(50)
    assert plan_of(dense).rules[0].arrival_steps == 50
    assert spike_total(lazy) > 200
    assert_same_run(dense, lazy, EXACT)


def test_batch_arrival_steps_after_out_of_bounds_weights():
    torch.manual_seed(7)
    lazy = arrival_network("native", batch=3, bounds=HardBounds(0.0, 1.2))
    torch.manual_seed(7)
    dense = arrival_network("native", batch=3, bounds=HardBounds(0.0, 1.2))
    for network in (lazy, dense):
        with torch.no_grad():
            network.connections["link"].weight[::5] = 1.4  # inside the connection's bounds, outside the rule's
    lazy.run(60)
    assert plan_of(lazy).rules[0].arrival_steps == 0
    # The first update brought every weight into the rule's bounds, so the next call keeps arrival steps.
    lazy.run(60)
    assert plan_of(lazy).rules[0].arrival_steps == 60
    for _ in range(12):
        dense.run(10)
    assert_same_run(dense, lazy, EXACT)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"delays": torch.rand(80, 30) * 4.0}, "fractional delays"),
        ({"delays": torch.randint(0, 60, (80, 30)).float()}, "more than 48 steps"),
    ],
)
def test_arrival_timing_outside_the_kernels_is_named(options, reason):
    network = arrival_network("auto", **options)
    assert reason in runner.unsupported_reason(network)
    assert "timing='emission'" in runner.unsupported_reason(network)


# --------------------------------------------------------------------------- sources and monitors


def sources_network(engine, *, batch=2):
    network = Network(dt=1.0, batch_size=batch, seed=4, engine=engine)
    times = torch.arange(0.0, 60.0, 3.0)
    network.add("generator", SpikeGenerator(10, times_ms=times, indices=torch.arange(20) % 10, dt=1.0))
    frames = (torch.rand(25, batch, 8) < 0.3).float()
    network.add("pattern", PatternInput(8, dt=1.0, spikes=frames, batch_size=batch, after_end="repeat"))
    network.add("output", LIF(12, dt=1.0, tau_mem=5.0, v_threshold=-60.0))
    network.connect("from_generator", "generator", "output", Dense(10, 12, torch.rand(10, 12) * 4.0, dt=1.0, delay=torch.randint(0, 3, (10, 12)).float()))
    network.connect("from_pattern", "pattern", "output", Dense(8, 12, torch.rand(8, 12) * 4.0, dt=1.0))
    network.add_monitor("count", SpikeCountMonitor("output"))
    network.add_monitor("input_count", SpikeCountMonitor("pattern"))
    network.add_monitor("window", SpikeMonitor("output", start_step=10, stop_step=50, chunk_size=7))
    network.add_monitor("spikes", SpikeMonitor("output", chunk_size=5))
    return network


def test_python_sources_and_spike_monitor_chunks_match_torch():
    reference, native = twin_networks(sources_network)
    reference.run(70)
    native.run(70)
    assert spike_total(reference) > 10
    assert len(native.monitors["window"].chunks) > 1
    assert_same_run(reference, native, EXACT)


def test_spike_monitor_sink_receives_the_same_chunks():
    received = {"torch": [], "native": []}
    networks = {}
    for engine in received:
        torch.manual_seed(7)
        network = forward_network(engine)
        network.add_monitor("sink", SpikeMonitor("output", chunk_size=16, sink=received[engine].append))
        networks[engine] = network
        network.run(90)
    assert len(received["torch"]) > 2
    assert [c.step.tolist() for c in received["native"]] == [c.step.tolist() for c in received["torch"]]
    assert [c.index.tolist() for c in received["native"]] == [c.index.tolist() for c in received["torch"]]


def test_full_event_buffer_is_drained_mid_run(monkeypatch):
    monkeypatch.setattr(plan, "MIN_EVENT_CAPACITY", 50)
    reference, native = twin_networks(forward_network, batch=3)
    reference.run(80)
    native.run(80)
    assert len(reference.monitors["spikes"].spike_events()) > 150
    assert_same_run(reference, native, EXACT)


def test_python_poisson_draws_when_generator_check_fails(monkeypatch):
    monkeypatch.setattr(runner.kernels(), "native_rng", False)
    runner._plans.clear()
    reference, native = twin_networks(forward_network, batch=2)
    reference.run(60)
    native.run(60)
    assert runner._plans[native].frames
    assert_same_run(reference, native, EXACT)
    runner._plans.clear()


# --------------------------------------------------------------------------- fallbacks


def test_unsupported_parts_are_named():
    network = forward_network("auto")
    assert runner.unsupported_reason(network) is None
    network.add_monitor("voltage", StateMonitor("output", "v"))
    assert "StateMonitor" in runner.unsupported_reason(network)

    other = Network(dt=1.0, engine="native")
    other.add("input", SpikeGenerator(2, times_ms=[1.0], indices=[0], dt=1.0))
    other.add("cell", Izhikevich(1, dt=1.0))
    other.connect("link", "input", "cell", Dense(2, 1, torch.ones(2, 1), dt=1.0))
    with pytest.raises(NetworkError, match="population 'cell' is a Izhikevich"):
        other.run(3)


def test_auto_engine_falls_back_to_torch():
    reference, fallback = twin_networks(forward_network)
    fallback.engine = "auto"
    for network in (reference, fallback):
        network.add_monitor("voltage", StateMonitor("output", "v", capacity=100))
    reference.run(40)
    fallback.run(40)
    torch.testing.assert_close(fallback.monitors["voltage"].values, reference.monitors["voltage"].values, **EXACT)
    assert_same_run(reference, fallback, EXACT)


def test_enabled_unsupported_rule_falls_back_until_switched_off():
    network = learning_network("auto")
    network.add_rule("homeostasis", Homeostasis(5.0, 0.01), "link")
    assert "Homeostasis" in runner.unsupported_reason(network)
    network.rules["homeostasis"].enabled = False
    assert runner.unsupported_reason(network) is None


def test_native_engine_rejects_grad():
    network = forward_network("native")
    with pytest.raises(NetworkError, match="does not record autograd"):
        network.run(2, grad=True)


def test_engine_name_is_checked():
    with pytest.raises(NetworkError, match="engine must be one of"):
        Network(dt=1.0, engine="fast")


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("EMBER_NATIVE", "0")
    network = forward_network("native")
    assert "EMBER_NATIVE=0" in runner.unsupported_reason(network)
    with pytest.raises(NetworkError, match="EMBER_NATIVE=0"):
        network.run(1)
    network.engine = "auto"
    network.run(3)
    assert int(network.step_count) == 3


def test_missing_compiler_fails_quietly(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(build, "_library", None)
    monkeypatch.setattr(build, "_failure", None)
    assert build.load() is None
    assert "no C compiler" in build.failure()


def test_build_cache_key_follows_the_cpu(monkeypatch, tmp_path):
    compiler = build.find_compiler()
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2\n")
    monkeypatch.setattr(build, "CPU_INFO", info)
    assert build.cpu_identity() == "model name=Test CPU | flags=fpu sse2 avx2"
    with_avx2 = build.source_hash(compiler)
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert build.source_hash(compiler) != with_avx2


def test_compiler_without_native_flags_gets_portable_ones(monkeypatch, tmp_path):
    # A wrapper compiler that rejects -march=native, as some compilers do.
    real = build.find_compiler()
    wrapper = tmp_path / "cc"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "-march=native" ] && exit 1; done\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    target = tmp_path / "kernels.so"
    build.compile_library(str(wrapper), target)
    assert target.exists()


def test_build_caches_by_source_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_NATIVE_CACHE", str(tmp_path))
    compiler = build.find_compiler()
    target = tmp_path / f"ember_native_{build.source_hash(compiler)}.so"
    build.compile_library(compiler, target)
    assert target.exists()
    assert [path.name for path in tmp_path.iterdir()] == [target.name]
