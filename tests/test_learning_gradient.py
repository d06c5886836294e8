"""Gradient training through time: weights and delays on every connection type, finite differences, a delay task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ember.connections import Conv2d, Dense, Lateral, OneToOne, Sparse
from ember.learning import STDP, bptt_step, run_recorded, trainable_parameters
from ember.network import Network
from ember.neurons import LIF
from ember.sources import PatternInput, SpikeGenerator
from ember.synapses import ExponentialCurrent

F64 = torch.float64
DT = 1.0
STEPS = 24
BATCH = 2
KINDS = ["dense", "lateral", "one_to_one", "sparse", "conv2d"]


def fractional_delays(shape, generator):
    """Delays in ms whose fractional part in steps lies in [0.2, 0.8], away from the kinks of the linear split."""
    whole = torch.randint(1, 5, shape, generator=generator).double()
    return (whole + 0.2 + 0.6 * torch.rand(shape, generator=generator, dtype=F64)) * DT


def trained_connection(kind, generator):
    """Return ``(connection, input_shape, output_shape)`` with trainable fractional delays, float64."""
    common = dict(dt=DT, dtype=F64, learn_delay=True, max_delay=8.0, batch_size=BATCH)
    if kind == "dense":
        return Dense(5, 3, torch.rand(5, 3, generator=generator, dtype=F64), delay=fractional_delays((5, 3), generator), **common), 5, 3
    if kind == "lateral":
        weight = torch.rand(4, 4, generator=generator, dtype=F64) * 0.2
        return Lateral(4, weight, delay=fractional_delays((4, 4), generator), min_delay=DT, **common), 4, 4
    if kind == "one_to_one":
        return OneToOne(4, torch.rand(4, generator=generator, dtype=F64) + 0.5, delay=fractional_delays((4,), generator), **common), 4, 4
    if kind == "sparse":
        return Sparse.fixed_fan_in(6, 3, 2, torch.rand(6, generator=generator, dtype=F64) + 0.5, generator=generator,
                                   delay=fractional_delays((6,), generator), **common), 6, 3
    if kind == "conv2d":
        kernel = torch.rand(2, 1, 3, 3, generator=generator, dtype=F64)
        return Conv2d((1, 4, 4), kernel, padding=1, delay=fractional_delays((2, 1, 3, 3), generator), **common), (1, 4, 4), (2, 4, 4)
    raise AssertionError(kind)


def gradient_network(kind, *, surrogate_slope=1.0, surrogate="fast_sigmoid", seed=0):
    """Random input spikes -> the connection under test -> LIF population "out" (membrane potential read by the loss).

    Without a lateral connection the population never reaches its threshold.
    For a lateral connection the population drives itself. Each input spike
    makes its neuron fire in the same step (one-to-one weight 2 mV, threshold
    1 mV). The weak lateral connection under test (below 0.2 mV per synapse,
    tau_mem 2 ms) only moves the membrane potential between those spikes.
    """
    generator = torch.Generator().manual_seed(seed)
    connection, in_shape, out_shape = trained_connection(kind, generator)
    net = Network(dt=DT, batch_size=BATCH)
    frames = (torch.rand(STEPS, BATCH, *((in_shape,) if isinstance(in_shape, int) else in_shape), generator=generator) < 0.3).double()
    source = net.add("input", PatternInput(in_shape, dt=DT, batch_size=BATCH, dtype=F64))
    source.set_data(frames)
    lateral = kind == "lateral"
    net.add("out", LIF(out_shape, dt=DT, tau_mem=2.0 if lateral else 5.0, v_rest=0.0, v_reset=0.0,
                       v_threshold=1.0 if lateral else 1e3, surrogate=surrogate, surrogate_slope=surrogate_slope,
                       batch_size=BATCH, dtype=F64))
    if lateral:
        net.connect("drive", "input", "out", OneToOne(4, 2.0, dt=DT, dtype=F64, batch_size=BATCH))
        net.connections["drive"].weight.requires_grad_(False)
        net.connect("link", "out", "out", connection)
    else:
        net.connect("link", "input", "out", connection)
    readout = torch.randn(STEPS, BATCH, *net.nodes["out"].shape, generator=generator, dtype=F64)
    return net, connection, readout


def teacher_targets(kind):
    """The membrane potentials of a teacher network: the same network with perturbed weights and delays."""
    teacher, connection, _ = gradient_network(kind)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        connection.weight.add_(0.1 * torch.randn(connection.weight.shape, generator=generator, dtype=F64))
        connection.delay.add_(0.6 * torch.rand(connection.delay.shape, generator=generator, dtype=F64) - 0.3)
        connection.apply_bounds()
        teacher.reset_state()
        return run_recorded(teacher, STEPS, ["out.v"], grad=False)["out.v"]


def readout_loss(net, readout, grad=True):
    net.reset_state()
    recorded = run_recorded(net, STEPS, ["out.v"], grad=grad)
    return (recorded["out.v"] * readout).sum()


@pytest.mark.parametrize("kind", KINDS)
def test_backward_trains_weights_and_delays(kind):
    target = teacher_targets(kind)
    net, connection, _ = gradient_network(kind)
    initial_weight = connection.weight.detach().clone()
    initial_delay = connection.delay.detach().clone()
    optimizer = torch.optim.Adam(trainable_parameters(net), lr=0.02)

    def loss_fn(recorded):
        return ((recorded["out.v"] - target) ** 2).mean()

    losses = [bptt_step(net, STEPS, loss_fn, optimizer, record=["out.v"]) for _ in range(15)]
    assert min(losses[-3:]) < 0.3 * losses[0]
    assert not torch.equal(connection.weight.detach(), initial_weight)
    assert not torch.equal(connection.delay.detach(), initial_delay)
    assert float(connection.delay.detach().min()) >= connection.min_delay
    assert float(connection.delay.detach().max()) <= connection.max_delay


@pytest.mark.parametrize("kind", KINDS)
def test_delay_gradient_matches_finite_differences(kind):
    # A triangle surrogate that is zero beyond 1e-3 mV of the threshold: the spikes of the lateral
    # population carry no surrogate gradient, so autograd and finite differences see the same function.
    net, connection, readout = gradient_network(kind, surrogate="triangle", surrogate_slope=1e3)
    connection.weight.requires_grad_(False)
    loss = readout_loss(net, readout)
    loss.backward()
    analytic = connection.delay.grad.detach().clone()
    assert bool(analytic.abs().max() > 1e-3)

    eps = 1e-6
    flat_indices = torch.randperm(connection.delay.numel(), generator=torch.Generator().manual_seed(1))[:10]
    for flat in flat_indices.tolist():
        index = tuple(torch.unravel_index(torch.tensor(flat), connection.delay.shape))
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                connection.delay[index] += sign * eps
            values.append(float(readout_loss(net, readout, grad=False)))
            with torch.no_grad():
                connection.delay[index] -= sign * eps
        numeric = (values[0] - values[1]) / (2 * eps)
        assert numeric == pytest.approx(float(analytic[index]), rel=1e-6, abs=1e-8)


def test_weight_gradient_matches_finite_differences():
    net, connection, readout = gradient_network("conv2d")
    connection.delay.requires_grad_(False)
    loss = readout_loss(net, readout)
    loss.backward()
    analytic = connection.weight.grad.detach().clone()
    eps = 1e-6
    for index in [(0, 0, 0, 0), (1, 0, 1, 2), (0, 0, 2, 1)]:
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                connection.weight[index] += sign * eps
            values.append(float(readout_loss(net, readout, grad=False)))
            with torch.no_grad():
                connection.weight[index] -= sign * eps
        assert (values[0] - values[1]) / (2 * eps) == pytest.approx(float(analytic[index]), rel=1e-6, abs=1e-8)


# --------------------------------------------------------------------------- a task that needs learned delays


def coincidence_network(learn_delay):
    """Two inputs 10 ms apart onto one LIF neuron; only near-coincident arrivals (gap below about 4 ms) reach threshold.

    Smooth postsynaptic potentials (exponential current with tau_syn 2 ms, tau_mem 4 ms) peak at 0.5 mV for two
    coincident unit inputs and at 0.29 mV for a 10 ms gap. The threshold is 0.43 mV and weights are bounded by
    1 nA, so weights alone cannot make the neuron fire.
    """
    net = Network(dt=1.0)
    net.add("input", SpikeGenerator(2, times_ms=[0.0, 10.0], indices=[0, 1], dt=1.0, dtype=F64))
    net.add("output", LIF(1, dt=1.0, tau_mem=4.0, v_rest=0.0, v_reset=0.0, v_threshold=0.43, dtype=F64))
    link = net.connect("link", "input", "output", Dense(
        2, 1, torch.full((2, 1), 0.8, dtype=F64), dt=1.0, dtype=F64, synapse=ExponentialCurrent(dt=1.0, tau_syn=2.0, dtype=F64),
        delay=torch.full((2, 1), 1.5, dtype=F64), max_delay=15.0, learn_delay=learn_delay, w_min=0.0, w_max=1.0,
    ))
    return net, link


def spike_count_loss(recorded):
    return (1.0 - recorded["output"].sum()) ** 2


def train_coincidence(net, iterations=25):
    optimizer = torch.optim.Adam(trainable_parameters(net), lr=0.2)
    return [bptt_step(net, 40, spike_count_loss, optimizer, record=["output"]) for _ in range(iterations)]


def test_learned_delays_make_inputs_coincide():
    net, link = coincidence_network(learn_delay=True)
    losses = train_coincidence(net)
    delay = link.delay.detach().flatten()
    gap_before = 10.0
    gap_after = float((10.0 + delay[1]) - (0.0 + delay[0]))
    assert losses[0] == 1.0
    assert losses[-1] == 0.0
    assert gap_after < 6.0 < gap_before
    assert float(delay[0]) > 1.5 > float(delay[1])
    with torch.no_grad():
        net.reset_state()
        spikes = run_recorded(net, 40, ["output"], grad=False)["output"]
    assert float(spikes.sum()) == 1.0


def test_fixed_delays_cannot_solve_coincidence():
    net, link = coincidence_network(learn_delay=False)
    losses = train_coincidence(net)
    assert losses[-1] == 1.0
    assert link.weight.detach().flatten().tolist() == [1.0, 1.0]  # weights went to their bound and still fall short


# --------------------------------------------------------------------------- helper errors


def test_gradient_helpers_reject_bad_use():
    net, connection, readout = gradient_network("dense")
    with pytest.raises(ValueError, match="node 'missing' not found"):
        run_recorded(net, 3, ["missing.v"])
    with pytest.raises(ValueError, match="node 'out' has no tensor attribute 'voltage'"):
        run_recorded(net, 3, ["out.voltage"])
    with pytest.raises(ValueError, match="steps must be at least 1"):
        run_recorded(net, 0, ["out"])
    assert trainable_parameters(net, weights=False) == [connection.delay]
    net.add_rule("stdp", STDP(), "link")
    optimizer = torch.optim.SGD(trainable_parameters(net), lr=0.1)
    with pytest.raises(ValueError, match=r"plasticity rules \['stdp'\] are enabled"):
        bptt_step(net, 3, lambda recorded: recorded["out.v"].sum(), optimizer, record=["out.v"])
    net.learning(False)
    bptt_step(net, 3, lambda recorded: recorded["out.v"].sum(), optimizer, record=["out.v"])
