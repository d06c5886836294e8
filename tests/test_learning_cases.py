"""Learning rules in networks of real neurons: the reported cases, closed forms, state, switching and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ember.connections import Dense
from ember.core import Node
from ember.learning import (
    MSTDP,
    MSTDPET,
    STDP,
    DelayAdjustedSTDP,
    DiehlCookSTDP,
    HardBounds,
    Homeostasis,
    KernelSTDP,
    PowerBounds,
    PowerLawSTDP,
    SoftBounds,
    TripletSTDP,
    WeightNormalization,
    make_kernel,
)
from ember.network import Network
from ember.neurons import LIF
from ember.sources import SpikeGenerator

F64 = torch.float64


def paired_network(pre_ms, post_ms, rule, *, dt=1.0, weight=0.0, delay=None, **connection_args):
    """Presynaptic spikes at ``pre_ms`` onto one LIF neuron that a teacher makes fire at ``post_ms``.

    The learned connection starts at ``weight``, 0 by default, so that it
    cannot move the neuron. The teacher connection makes the neuron fire in
    the step of each teacher spike.
    """
    net = Network(dt=dt)
    net.add("pre", SpikeGenerator(1, times_ms=pre_ms, indices=[0] * len(pre_ms), dt=dt, dtype=F64))
    net.add("teacher", SpikeGenerator(1, times_ms=post_ms, indices=[0] * len(post_ms), dt=dt, dtype=F64))
    net.add("post", LIF(1, dt=dt, v_rest=0.0, v_reset=0.0, v_threshold=1.0, tau_mem=10.0, dtype=F64))
    net.connect("teach", "teacher", "post", Dense(1, 1, torch.full((1, 1), 5.0), dt=dt, dtype=F64))
    max_delay = None if delay is None else max(delay, 5.0)
    net.connect("link", "pre", "post",
                Dense(1, 1, torch.full((1, 1), weight), dt=dt, dtype=F64, delay=delay, max_delay=max_delay, **connection_args))
    net.add_rule("plasticity", rule, "link")
    return net


def weight_of(net, name="link"):
    return net.connections[name].weight.detach().item()


# --------------------------------------------------------------------------- reported cases


@pytest.mark.parametrize("dt", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("chunks", [[10], [1] * 10, [3, 7], [5, 5]], ids=["one_call", "ten_calls", "3+7", "5+5"])
def test_stdp_in_chunks(dt, chunks):
    rule = STDP(a_plus=0.01, a_minus=0.0, tau_plus=20.0)
    net = paired_network([0.0], [5.0], rule, dt=dt)
    for chunk in chunks:
        net.run(round(chunk / dt))
    assert weight_of(net) == pytest.approx(0.01 * math.exp(-0.25), abs=1e-12)
    assert round(weight_of(net), 7) == 0.0077880


@pytest.mark.parametrize("gap_ms", [1.0, 5.0, 12.0])
def test_stdp_sign(gap_ms):
    causal = paired_network([0.0], [gap_ms], STDP(a_plus=0.01, a_minus=0.012, tau_plus=20.0, tau_minus=15.0))
    causal.run(20)
    assert weight_of(causal) == pytest.approx(0.01 * math.exp(-gap_ms / 20.0), abs=1e-12)

    anti_causal = paired_network([gap_ms], [0.0], STDP(a_plus=0.01, a_minus=0.012, tau_plus=20.0, tau_minus=15.0))
    anti_causal.run(20)
    assert weight_of(anti_causal) == pytest.approx(-0.012 * math.exp(-gap_ms / 15.0), abs=1e-12)


def test_stdp_sign_through_a_delay():
    # Emitted at 0 ms through a 2 ms delay, the spike reaches the synapse at 2 ms; the neuron fires at 5 ms.
    net = paired_network([0.0], [5.0], STDP(a_plus=0.01, a_minus=0.012, tau_plus=20.0), delay=2.0)
    net.run(10)
    assert weight_of(net) == pytest.approx(0.01 * math.exp(-3.0 / 20.0), abs=1e-12)
    # Emitted at 0 ms but arriving at 4 ms, after the neuron fired at 3 ms: depression.
    late = paired_network([0.0], [3.0], STDP(a_plus=0.01, a_minus=0.012, tau_minus=15.0), delay=4.0)
    late.run(10)
    assert weight_of(late) == pytest.approx(-0.012 * math.exp(-1.0 / 15.0), abs=1e-12)


def coincident_update(connection, rule, *, pre_first=False):
    """Step ``rule`` once with a presynaptic and a postsynaptic spike (x_pre = 1 at the postsynaptic spike).

    With ``pre_first`` the postsynaptic spike comes one step earlier, for depression.
    """
    pre, post = Node(1, dt=1.0, dtype=F64), Node(1, dt=1.0, dtype=F64)
    rule.bind(connection, pre, post)
    if pre_first:
        post.spikes = torch.ones(1, 1, dtype=F64)
        rule.step(0)
        post.spikes = torch.zeros(1, 1, dtype=F64)
        pre.spikes = torch.ones(1, 1, dtype=F64)
        rule.step(1)
        return
    pre.spikes = torch.ones(1, 1, dtype=F64)
    post.spikes = torch.ones(1, 1, dtype=F64)
    rule.step(0)


@pytest.mark.parametrize("bounds", ["connection", "rule"])
def test_hard_bound_after_update(bounds):
    limits = {"w_min": 0.0, "w_max": 1.0}
    connection_bounds = limits if bounds == "connection" else {}
    rule_bounds = HardBounds(0.0, 1.0) if bounds == "rule" else None
    connection = Dense(1, 1, torch.tensor([[0.95]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity(), **connection_bounds)
    coincident_update(connection, STDP(a_plus=0.2, a_minus=0.0, bounds=rule_bounds))
    assert connection.weight.item() == 1.0
    with torch.no_grad():
        connection.emit(torch.ones(1, 1, dtype=F64), 5)
        assert connection.receive(5).item() == 1.0

    connection = Dense(1, 1, torch.tensor([[0.05]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity(), **connection_bounds)
    coincident_update(connection, STDP(a_plus=0.0, a_minus=0.2, bounds=rule_bounds), pre_first=True)
    assert connection.weight.item() == 0.0
    with torch.no_grad():
        connection.emit(torch.ones(1, 1, dtype=F64), 5)
        assert connection.receive(5).item() == 0.0


def test_hard_bound_delivers_bounded_weight_in_network():
    # The update at 0 ms would take 0.95 to 1.15; the spike at 3 ms must arrive with 1.0 (v jumps by exactly 1.0 mV).
    net = Network(dt=1.0)
    net.add("pre", SpikeGenerator(1, times_ms=[0.0, 3.0], indices=[0, 0], dt=1.0, dtype=F64))
    net.add("teacher", SpikeGenerator(1, times_ms=[0.0], indices=[0], dt=1.0, dtype=F64))
    post = net.add("post", LIF(1, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=2.5, tau_mem=1e9, dtype=F64))
    net.connect("teach", "teacher", "post", Dense(1, 1, torch.full((1, 1), 5.0), dt=1.0, dtype=F64))
    net.connect("link", "pre", "post", Dense(1, 1, torch.full((1, 1), 0.95), dt=1.0, dtype=F64, w_min=0.0, w_max=1.0))
    net.add_rule("plasticity", STDP(a_plus=0.2, a_minus=0.0), "link")
    net.run(3)
    v_before = post.v.item()
    net.learning(False)
    net.run(1)
    assert weight_of(net) == 1.0
    assert post.v.item() - v_before == pytest.approx(1.0, abs=1e-9)


def test_soft_bound():
    connection = Dense(1, 1, torch.tensor([[0.9]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity())
    coincident_update(connection, STDP(a_plus=0.1, a_minus=0.0, bounds=SoftBounds(0.0, 1.0)))
    assert connection.weight.item() == pytest.approx(0.91, abs=1e-15)

    at_max = Dense(1, 1, torch.tensor([[1.0]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity())
    coincident_update(at_max, STDP(a_plus=0.1, a_minus=0.0, bounds=SoftBounds(0.0, 1.0)))
    assert at_max.weight.item() == 1.0


def test_soft_bound_depression_and_power_law():
    # Depression is scaled by (w - w_min): x_post = exp(-1/20) one step after the postsynaptic spike.
    connection = Dense(1, 1, torch.tensor([[0.3]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity())
    coincident_update(connection, STDP(a_plus=0.0, a_minus=0.1, bounds=SoftBounds(0.0, 1.0)), pre_first=True)
    assert connection.weight.item() == pytest.approx(0.3 - 0.1 * math.exp(-1 / 20) * 0.3, abs=1e-15)

    connection = Dense(1, 1, torch.tensor([[0.9]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity())
    coincident_update(connection, STDP(a_plus=0.1, a_minus=0.0, bounds=PowerBounds(0.0, 1.0, exponent=0.5)))
    assert connection.weight.item() == pytest.approx(0.9 + 0.1 * 0.1**0.5, abs=1e-15)

    # Bounds missing on both the rule and the connection.
    with pytest.raises(ValueError, match="SoftBounds needs w_min and w_max"):
        coincident_update(Dense(1, 1, torch.ones(1, 1), dt=1.0, synapse=nn.Identity()), STDP(bounds=SoftBounds()))


def test_bounds_from_connection():
    connection = Dense(1, 1, torch.tensor([[0.5]], dtype=F64), dt=1.0, dtype=F64, w_min=0.0, w_max=2.0, synapse=nn.Identity())
    coincident_update(connection, STDP(a_plus=0.1, a_minus=0.0, bounds=SoftBounds()))
    assert connection.weight.item() == pytest.approx(0.5 + 0.1 * 1.5, abs=1e-15)


RULE_FACTORIES = {
    "stdp": lambda: STDP(),
    "stdp_nearest": lambda: STDP(trace="nearest"),
    "triplet": lambda: TripletSTDP(),
    "kernel": lambda: KernelSTDP("gaussian"),
    "diehl_cook": lambda: DiehlCookSTDP(),
    "power_law": lambda: PowerLawSTDP(w_max=1.0),
    "mstdp": lambda: MSTDP(),
    "mstdpet": lambda: MSTDPET(),
    "delay": lambda: DelayAdjustedSTDP(a_plus=0.01, a_minus=0.01, stop_below=1.5),
}


@pytest.mark.parametrize("name", sorted(RULE_FACTORIES))
def test_no_spikes_in_network(name):
    net = paired_network([], [], RULE_FACTORIES[name](), weight=0.5, delay=2.5)
    rule = net.rules["plasticity"]
    if hasattr(rule, "set_reward"):
        rule.set_reward(1.0)
    net.run(30)
    assert weight_of(net) == 0.5
    assert net.connections["link"].delay.item() == 2.5


# --------------------------------------------------------------------------- closed forms of the other rules


def test_diehl_cook_closed_form():
    net = paired_network([5.0], [3.0, 10.0], DiehlCookSTDP(nu_pre=1e-3, nu_post=1e-2), weight=0.5)
    net.run(12)
    # Pre at 5 reads x_post1 = exp(-2/20); post at 10 reads x_pre = exp(-5/20) and x_post2 from before it, exp(-7/40).
    expected = 0.5 - 1e-3 * math.exp(-2 / 20) + 1e-2 * math.exp(-5 / 20) * math.exp(-7 / 40)
    assert weight_of(net) == pytest.approx(expected, abs=1e-14)


def test_diehl_cook_traces_reset_to_one():
    # Two presynaptic spikes 1 ms apart: x_pre is reset to 1, not 1 + exp(-1/20).
    net = paired_network([0.0, 1.0], [1.0], DiehlCookSTDP(nu_pre=0.0, nu_post=1e-2), weight=0.5)
    net.run(3)
    # x_post2 before the first postsynaptic spike is 0, so nothing changes; check the trace itself.
    assert net.rules["plasticity"].pre_trace.item() == pytest.approx(math.exp(-1 / 20), abs=1e-14)


def test_triplet_closed_form():
    rule = TripletSTDP(a2_plus=0.01, a3_plus=0.02, a2_minus=0.005, a3_minus=0.004)
    net = paired_network([2.0, 6.0], [0.0, 4.0], rule, weight=0.5)
    net.run(8)
    r1 = lambda dt_ms: math.exp(-dt_ms / rule.tau_plus)
    o1 = lambda dt_ms: math.exp(-dt_ms / rule.tau_minus)
    # post 0; pre 2 (reads o1 of post 0, r2 = 0); post 4 (reads r1 of pre 2, o2 of post 0);
    # pre 6 (reads o1 of posts 0 and 4, r2 of pre 2).
    expected = 0.5
    expected -= o1(2) * 0.005
    expected += r1(2) * (0.01 + 0.02 * math.exp(-4 / rule.tau_y))
    expected -= (o1(6) + o1(2)) * (0.005 + 0.004 * math.exp(-4 / rule.tau_x))
    assert weight_of(net) == pytest.approx(expected, abs=1e-14)


def test_power_law_closed_form():
    rule = PowerLawSTDP(eta=0.05, x_target=0.4, exponent=0.2, tau_pre=20.0)
    net = paired_network([0.0], [4.0, 8.0], rule, weight=0.5, w_min=0.0, w_max=1.0)
    net.run(10)
    w = 0.5 + 0.05 * (math.exp(-4 / 20) - 0.4) * (1.0 - 0.5) ** 0.2
    w = w + 0.05 * (math.exp(-8 / 20) - 0.4) * (1.0 - w) ** 0.2
    assert weight_of(net) == pytest.approx(w, abs=1e-14)
    with pytest.raises(ValueError, match="PowerLawSTDP needs w_max"):
        paired_network([0.0], [4.0], PowerLawSTDP())


@pytest.mark.parametrize("reward", [1.0, -1.0, 0.0])
def test_mstdp_reward_sign(reward):
    rule = MSTDP(a_plus=1.0, a_minus=1.0, tau_plus=20.0, gamma=0.01)
    net = paired_network([0.0], [5.0], rule, weight=0.5)
    rule.set_reward(reward)
    net.run(8)
    assert weight_of(net) == pytest.approx(0.5 + reward * 0.01 * math.exp(-5 / 20), abs=1e-14)


def test_mstdpet_reward_after_the_pair():
    rule = MSTDPET(a_plus=1.0, a_minus=0.0, tau_plus=20.0, gamma=0.1, tau_eligibility=10.0)
    net = paired_network([0.0], [2.0], rule, weight=0.5)
    net.run(5)
    assert weight_of(net) == 0.5  # no reward yet
    rule.set_reward(2.0)
    net.run(3)
    z2 = math.exp(-2 / 20) / 10.0
    expected = 0.5 + 0.1 * 2.0 * 1.0 * sum(z2 * math.exp(-(t - 2) / 10.0) for t in (5, 6, 7))
    assert weight_of(net) == pytest.approx(expected, abs=1e-14)
    net.reset_state()
    assert rule.reward.tolist() == [0.0]
    assert not bool(rule.eligibility.any())


def test_set_reward_per_sample():
    rule = MSTDP()
    connection = Dense(2, 1, torch.ones(2, 1), dt=1.0, batch_size=3, synapse=nn.Identity())
    rule.bind(connection, Node(2, dt=1.0, batch_size=3), Node(1, dt=1.0, batch_size=3))
    rule.set_reward(torch.tensor([1.0, 0.0, -2.0]))
    assert rule.reward.tolist() == [1.0, 0.0, -2.0]
    with pytest.raises(ValueError, match=r"reward must be a number or a tensor of shape \(3,\)"):
        rule.set_reward(torch.ones(2))
    with pytest.raises(ValueError, match="reward must be finite"):
        rule.set_reward(float("nan"))


@pytest.mark.parametrize(
    ("name", "parameters", "delta_t", "expected"),
    [
        ("exponential", {"a_plus": 0.02, "a_minus": 0.01, "tau_plus": 10.0, "tau_minus": 5.0}, [3.0, -2.0, 0.0],
         [0.02 * math.exp(-0.3), -0.01 * math.exp(-0.4), 0.02]),
        ("gaussian", {"amplitude": 0.02, "sigma": 4.0, "center": 1.0, "offset": 0.005}, [1.0, 5.0],
         [0.015, 0.02 * math.exp(-0.5) - 0.005]),
        ("mexican_hat", {"amplitude": 0.02, "sigma": 2.0}, [0.0, 2.0, 4.0],
         [0.02, 0.0, 0.02 * (1 - 4) * math.exp(-2.0)]),
        ("rectangular", {"a_plus": 0.02, "a_minus": 0.01, "window_plus": 5.0, "window_minus": 3.0}, [5.0, 5.5, -3.0, -3.5],
         [0.02, 0.0, -0.01, 0.0]),
    ],
)
def test_named_kernels(name, parameters, delta_t, expected):
    values = make_kernel(name, **parameters)(torch.tensor(delta_t, dtype=F64))
    assert values.tolist() == pytest.approx(expected, abs=1e-15)


def test_kernel_stdp_closed_form():
    kernel = lambda delta_t: 0.01 * torch.sin(delta_t)  # noqa: E731
    net = paired_network([1.0, 9.0], [4.0, 6.0], KernelSTDP(kernel), weight=0.5)
    net.run(12)
    # Nearest pairs: post 4 - pre 1 (3 ms), post 6 - pre 1 (5 ms), pre 9 - post 6 (-3 ms).
    expected = 0.5 + 0.01 * (math.sin(3.0) + math.sin(5.0) + math.sin(-3.0))
    assert weight_of(net) == pytest.approx(expected, abs=1e-14)


# --------------------------------------------------------------------------- homeostasis and normalisation


def test_homeostasis_on_thresholds():
    net = Network(dt=1.0)
    net.add("pre", SpikeGenerator(2, times_ms=[], indices=[], dt=1.0))
    post = net.add("post", LIF(2, dt=1.0, v_threshold=-50.0))
    net.add("teacher", SpikeGenerator(2, times_ms=[1.0, 3.0, 5.0, 7.0], indices=[1, 1, 1, 1], dt=1.0))
    net.connect("teach", "teacher", "post", Dense(2, 2, torch.eye(2) * 40.0, dt=1.0))
    net.connect("link", "pre", "post", Dense(2, 2, torch.ones(2, 2), dt=1.0))
    net.add_rule("homeostasis", Homeostasis(target_rate=250.0, eta=0.5, parameter="threshold", interval=8.0), "link")
    assert post.v_threshold.shape == (2,)
    net.run(8)
    # Neuron 0 is silent (relative error +1): threshold down by 0.5 mV. Neuron 1 fires at 500 Hz (error -1): up by 0.5 mV.
    assert post.v_threshold.tolist() == [-50.5, -49.5]
    net.run(7)
    assert post.v_threshold.tolist() == [-50.5, -49.5]  # the next window is not complete


def test_homeostasis_rejects_bad_targets():
    with pytest.raises(ValueError, match="parameter must be one of 'weight', 'delay', 'threshold'"):
        Homeostasis(5.0, 0.1, parameter="bias")
    with pytest.raises(ValueError, match="needs a neuron population with a threshold"):
        Homeostasis(5.0, 0.1, parameter="threshold").bind(Dense(1, 1, torch.ones(1, 1), dt=1.0), Node(1, dt=1.0), Node(1, dt=1.0))
    with pytest.raises(ValueError, match="interval of 2.5 ms is not a whole number of steps"):
        Homeostasis(5.0, 0.1, interval=2.5).bind(Dense(1, 1, torch.ones(1, 1), dt=1.0), Node(1, dt=1.0), Node(1, dt=1.0))
    with pytest.raises(ValueError, match="Homeostasis on delays needs a connection with delays"):
        Homeostasis(5.0, 0.1, parameter="delay").bind(Dense(1, 1, torch.ones(1, 1), dt=1.0), Node(1, dt=1.0), Node(1, dt=1.0))


def test_normalization_interval_and_switch():
    connection = Dense(2, 2, torch.tensor([[1.0, 3.0], [1.0, 1.0]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity())
    rule = WeightNormalization(target_sum=1.0, on_sample=False, interval=2.0)
    rule.bind(connection, Node(2, dt=1.0), Node(2, dt=1.0))
    rule.before_sample()
    assert connection.weight.tolist() == [[1.0, 3.0], [1.0, 1.0]]
    rule.step(0)
    assert connection.weight.tolist() == [[1.0, 3.0], [1.0, 1.0]]
    rule.step(1)
    assert connection.weight.tolist() == [[0.5, 0.75], [0.5, 0.25]]
    connection.apply_update("weight", torch.ones(2, 2, dtype=F64))
    rule.enabled = False
    rule.step(2)
    rule.step(3)
    assert connection.weight.tolist() == [[1.5, 1.75], [1.5, 1.25]]


def test_normalization_before_sample():
    connection = Dense(3, 1, torch.tensor([[1.0], [2.0], [5.0]], dtype=F64), dt=1.0, dtype=F64, synapse=nn.Identity())
    rule = WeightNormalization(target_sum=78.0)
    rule.bind(connection, Node(3, dt=1.0), Node(1, dt=1.0))
    rule.before_sample()
    assert connection.weight.flatten().tolist() == pytest.approx([9.75, 19.5, 48.75], abs=1e-12)
    rule.enabled = False
    connection.apply_update("weight", torch.ones(3, 1, dtype=F64))
    rule.before_sample()
    assert connection.weight.sum().item() == pytest.approx(81.0, abs=1e-12)


# --------------------------------------------------------------------------- state, switching, checkpoints


def learning_network(seed=0):
    """Poisson-like explicit input -> two LIF populations, one STDP rule per connection."""
    generator = torch.Generator().manual_seed(seed)
    times = (torch.rand(60, generator=generator) * 40.0).round().tolist()
    indices = torch.randint(0, 6, (60,), generator=generator).tolist()
    unique = sorted(set(zip(times, indices)))
    net = Network(dt=1.0)
    net.add("input", SpikeGenerator(6, times_ms=[t for t, _ in unique], indices=[i for _, i in unique], dt=1.0))
    net.add("first", LIF(4, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0, tau_mem=10.0))
    net.add("second", LIF(3, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0, tau_mem=10.0))
    net.connect("a", "input", "first", Dense(6, 4, torch.rand(6, 4, generator=generator) * 0.8, dt=1.0,
                                             delay=torch.rand(6, 4, generator=generator) * 3.0, max_delay=4.0))
    net.connect("b", "input", "second", Dense(6, 3, torch.rand(6, 3, generator=generator) * 0.8, dt=1.0))
    net.add_rule("stdp_a", STDP(a_plus=0.02, a_minus=0.01), "a")
    net.add_rule("stdp_b", TripletSTDP(), "b")
    return net


def test_rule_state_in_state_dict_and_reset():
    net = learning_network()
    net.run(20)
    state = net.state_dict()
    for key in ("rules.stdp_a.pre_trace", "rules.stdp_a.post_trace", "rules.stdp_a.arrivals.history",
                "rules.stdp_a.arrivals.reported", "rules.stdp_a.arrivals.last_step", "rules.stdp_b.r1", "rules.stdp_b.o2"):
        assert key in state
    rule = net.rules["stdp_a"]
    assert bool(rule.pre_trace.any())
    assert rule.pre_trace.shape == (1, 6, 4)  # per synapse: the connection has delays
    assert net.rules["stdp_b"].r1.shape == (1, 6)  # per presynaptic neuron
    net.reset_state()
    assert not bool(rule.pre_trace.any())
    assert not bool(rule.post_trace.any())
    assert int(rule.arrivals.last_step) == -1
    assert not bool(rule.arrivals.history.any())


def test_checkpoint_continues_learning(tmp_path):
    net = learning_network()
    net.run(15)
    net.save(str(tmp_path / "state.safetensors"))
    net.run(15)
    resumed = learning_network()
    resumed.load(str(tmp_path / "state.safetensors"))
    resumed.run(15)
    for name in ("a", "b"):
        torch.testing.assert_close(resumed.connections[name].weight, net.connections[name].weight, rtol=0, atol=0)
    torch.testing.assert_close(resumed.rules["stdp_a"].pre_trace, net.rules["stdp_a"].pre_trace, rtol=0, atol=0)


def test_learning_switched_per_connection_and_phase():
    net = learning_network()
    initial = {name: net.connections[name].weight.detach().clone() for name in ("a", "b")}
    net.learning(False, connections=["a"])
    net.run(40)
    assert torch.equal(net.connections["a"].weight, initial["a"])
    assert not torch.equal(net.connections["b"].weight, initial["b"])

    # Test phase: everything off.
    net.reset_state()
    net.learning(False)
    frozen = {name: net.connections[name].weight.detach().clone() for name in ("a", "b")}
    net.run(40)
    for name in ("a", "b"):
        assert torch.equal(net.connections[name].weight, frozen[name])


def test_batch_learning_matches_reduction():
    # Two identical samples with reduce="mean" learn exactly what one sample learns; "sum" learns twice that.
    results = {}
    for batch, reduce in ((1, "mean"), (2, "mean"), (2, "sum")):
        net = paired_network([0.0], [5.0], STDP(a_plus=0.01, a_minus=0.0, reduce=reduce))
        net.set_batch_size(batch)
        net.run(8)
        results[(batch, reduce)] = weight_of(net)
    assert results[(2, "mean")] == pytest.approx(results[(1, "mean")], abs=1e-15)
    assert results[(2, "sum")] == pytest.approx(2 * results[(1, "mean")], abs=1e-15)


# --------------------------------------------------------------------------- errors


def test_rules_reject_invalid_arguments():
    with pytest.raises(ValueError, match="tau_plus must be above 0 \\(in ms\\), got 0.0"):
        STDP(tau_plus=0.0)
    with pytest.raises(ValueError, match="reduce must be one of 'sum', 'mean', got 'median'"):
        STDP(reduce="median")
    with pytest.raises(ValueError, match="trace must be one of 'all_to_all', 'nearest'"):
        STDP(trace="nearest_neighbour")
    with pytest.raises(ValueError, match="timing must be one of 'arrival', 'emission'"):
        TripletSTDP(timing="soma")
    with pytest.raises(ValueError, match="a_plus must be finite"):
        STDP(a_plus=float("inf"))
    with pytest.raises(ValueError, match="kernel must be one of 'exponential', 'gaussian'"):
        KernelSTDP("cosine")
    with pytest.raises(ValueError, match="unknown: width"):
        KernelSTDP("gaussian", parameters={"width": 3.0})
    with pytest.raises(ValueError, match="parameters are only for named kernels"):
        KernelSTDP(lambda delta_t: delta_t, parameters={"a": 1.0})
    with pytest.raises(ValueError, match="bounds must be an ember.learning.bounds object"):
        STDP(bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"w_min \(2.0\) must not exceed w_max \(1.0\)"):
        SoftBounds(2.0, 1.0)


def test_rule_binding_errors():
    rule = STDP()
    with pytest.raises(RuntimeError, match="STDP is not bound to a connection"):
        rule.step(0)
    connection = Dense(2, 1, torch.ones(2, 1), dt=1.0, synapse=nn.Identity())
    with pytest.raises(ValueError, match=r"post node shape \(3,\) does not match the connection's post_shape \(1,\)"):
        rule.bind(connection, Node(2, dt=1.0), Node(3, dt=1.0))
    rule.bind(connection, Node(2, dt=1.0), Node(1, dt=1.0))
    with pytest.raises(ValueError, match="STDP is already bound to a connection"):
        rule.bind(connection, Node(2, dt=1.0), Node(1, dt=1.0))
    with pytest.raises(ValueError, match="kernel must return a tensor of the shape of its input"):
        bad = KernelSTDP(lambda delta_t: delta_t.sum())
        coincident_update(Dense(1, 1, torch.ones(1, 1), dt=1.0, synapse=nn.Identity()), bad)


@pytest.mark.gpu
def test_rule_state_follows_device():
    net = learning_network().to("cuda")
    for rule in net.rules.values():
        for tensor in list(rule.buffers()):
            assert tensor.device.type == "cuda"
    net.run(20)
    reference = learning_network()
    reference.run(20)
    torch.testing.assert_close(net.connections["a"].weight.cpu(), reference.connections["a"].weight, rtol=1e-5, atol=1e-6)
