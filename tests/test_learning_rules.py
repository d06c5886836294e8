"""Every plasticity rule on every connection type, against a brute-force per-synapse reference.

The reference below enumerates the synapses of a connection one by one
(``synapse_list`` from the connection tests). It evaluates each rule's
formula from the spike times of that synapse alone. Presynaptic spikes reach
synapse ``s`` at ``t_emit + d_s`` (exact, fractional) and count at the first
step at or after that time, and a pair whose two spikes fall in the same step
is causal. Contributions are summed per weight (positions of a convolution
share one), reduced over the batch, and applied step by step, depression
before potentiation, as the rules promise. Agreement to float64 round-off on
dense, lateral, one-to-one, sparse and padded conv2d connections checks that
the rules reach synapses only through the connection's learning view.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
from torch import nn

from ember.connections import Conv2d, Dense, Lateral, OneToOne, Sparse
from ember.core import Node
from ember.learning import (
    MSTDP,
    MSTDPET,
    STDP,
    DelayAdjustedSTDP,
    DiehlCookSTDP,
    Homeostasis,
    KernelSTDP,
    PowerLawSTDP,
    TripletSTDP,
    WeightNormalization,
)
from ember.learning.kernel import make_kernel
from tests.test_connections import synapse_list

DT = 0.5
BATCH = 2
STEPS = 16
KINDS = ["dense", "lateral", "one_to_one", "sparse", "conv2d"]


# --------------------------------------------------------------------------- connections and spikes


def make_connection(kind: str, *, delays: bool, seed: int = 0, **bounds) -> nn.Module:
    """Build a small float64 connection of ``kind`` with fractional delays (or none)."""
    generator = torch.Generator().manual_seed(seed)
    common = dict(dt=DT, synapse=nn.Identity(), dtype=torch.float64, batch_size=BATCH, **bounds)

    def delay(shape, low=0.0):
        if not delays:
            return None
        whole = torch.randint(0, 6, shape, generator=generator).double() * DT
        return (whole + torch.rand(shape, generator=generator, dtype=torch.float64) * DT).clamp(min=low)

    if kind == "dense":
        return Dense(6, 4, torch.rand(6, 4, generator=generator, dtype=torch.float64), delay=delay((6, 4)), max_delay=4.0, **common)
    if kind == "lateral":
        return Lateral(5, torch.rand(5, 5, generator=generator, dtype=torch.float64),
                       delay=delay((5, 5), low=DT) if delays else DT, max_delay=4.0, min_delay=DT, **common)
    if kind == "one_to_one":
        return OneToOne(5, torch.rand(5, generator=generator, dtype=torch.float64), delay=delay((5,)), max_delay=4.0, **common)
    if kind == "sparse":
        return Sparse.fixed_fan_in(6, 8, 3, torch.rand(24, generator=generator, dtype=torch.float64),
                                   generator=generator, delay=delay((24,)), max_delay=4.0, **common)
    if kind == "conv2d":
        return Conv2d((1, 5, 5), torch.rand(2, 1, 3, 3, generator=generator, dtype=torch.float64),
                      padding=1, delay=delay((2, 1, 3, 3)), max_delay=4.0, **common)
    raise AssertionError(kind)


def make_nodes(connection):
    """Return stand-in ``(pre, post)`` nodes whose spikes the test sets; lateral uses one node for both."""
    pre = Node(connection.pre_shape, dt=DT, batch_size=BATCH, dtype=torch.float64)
    if isinstance(connection, Lateral):
        return pre, pre
    return pre, Node(connection.post_shape, dt=DT, batch_size=BATCH, dtype=torch.float64)


def random_raster(shape, seed, rate, steps=STEPS):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, BATCH, *shape, generator=generator, dtype=torch.float64) < rate).double()


def rasters(connection, seed, *, single_pre=False):
    """Presynaptic and postsynaptic spikes per step; lateral gets one raster for both sides.

    With ``single_pre`` every presynaptic unit spikes at most once, at step 0
    (for delay learning, whose reference times arrivals with the initial delays).
    """
    if single_pre and isinstance(connection, Lateral):
        # One population on both sides: every unit spikes once, at the same step in every sample,
        # so no delay changes between two arrivals through the same synapse.
        generator = torch.Generator().manual_seed(seed)
        raster = torch.zeros(STEPS, BATCH, *connection.pre_shape, dtype=torch.float64)
        for unit, step in enumerate(torch.randint(0, STEPS // 2, connection.pre_shape, generator=generator).tolist()):
            raster[step, :, unit] = 1.0
        return raster, raster
    if single_pre:
        pre = torch.zeros(STEPS, BATCH, *connection.pre_shape, dtype=torch.float64)
        pre[0] = random_raster(connection.pre_shape, seed, 0.6, steps=1)[0]
        post = random_raster(connection.post_shape, seed + 1, 0.25)
        post[0] = 0.0
        return pre, post
    pre = random_raster(connection.pre_shape, seed, 0.25)
    if isinstance(connection, Lateral):
        return pre, pre
    return pre, random_raster(connection.post_shape, seed + 1, 0.3)


def drive(rule, connection, pre_raster, post_raster):
    """Bind ``rule`` to stand-in nodes and step it through the rasters."""
    pre, post = make_nodes(connection)
    rule.bind(connection, pre, post)
    for step in range(pre_raster.shape[0]):
        pre.spikes = pre_raster[step]
        post.spikes = post_raster[step]
        rule.step(step)
    return rule


# --------------------------------------------------------------------------- the reference


def synapse_spikes(connection, pre_raster, post_raster, *, use_delays):
    """For every synapse and sample: ``(weight index, sample, arrival times, postsynaptic spike steps)``.

    Arrival times are exact (emission step + delay in steps) and only those
    that count within the run are kept.
    """
    steps = pre_raster.shape[0]
    delays = connection.delay.detach() / connection.dt if (use_delays and connection.delay is not None) else None
    pre_flat = pre_raster.reshape(steps, BATCH, -1)
    post_flat = post_raster.reshape(steps, BATCH, -1)
    result = []
    for pre, post, widx in synapse_list(connection):
        delay = 0.0 if delays is None else float(delays[widx])
        for sample in range(BATCH):
            arrivals = [t + delay for t in range(steps) if pre_flat[t, sample, pre] > 0]
            arrivals = [a for a in arrivals if count_step(a) < steps]
            posts = [t for t in range(steps) if post_flat[t, sample, post] > 0]
            result.append((widx, sample, arrivals, posts))
    return result


def count_step(time: float) -> int:
    """The step at which an arrival at ``time`` (steps) counts: the step in which its delivery starts."""
    return int(math.floor(time + 1e-9))


def trace(times, at, tau, mode="all_to_all"):
    """The value at time ``at`` (steps) of a trace fed by ``times`` (each adds 1, or sets 1 for nearest).

    An arrival later than ``at`` within the same step counts with a time difference of 0.
    """
    if not times:
        return 0.0
    if mode == "nearest":
        return math.exp(-max(at - max(times), 0.0) * DT / tau)
    return sum(math.exp(-max(at - time, 0.0) * DT / tau) for time in times)


def before(times, step):
    """Spike steps strictly before ``step``."""
    return [t for t in times if t < step]


def arrived_by(arrivals, step):
    """Arrivals that count at or before ``step``."""
    return [a for a in arrivals if count_step(a) <= step]


def apply_events(connection, events, reduce, applier=None, steps=STEPS):
    """Apply ``(step, phase, widx, value)`` contributions per step and phase, reduced over the batch."""
    weight = connection.weight.detach().clone()
    by_step = defaultdict(lambda: defaultdict(float))
    for step, phase, widx, value in events:
        by_step[(step, phase)][widx] += value
    for step in range(steps):
        for phase in (0, 1):
            for widx, total in by_step[(step, phase)].items():
                total = total / BATCH if reduce == "mean" else total
                weight[widx] += total if applier is None else applier(float(weight[widx]), total)
    return weight


def reference_pair_rule(rule, connection, pre_raster, post_raster, use_delays):
    """Reference for the trace rules: STDP, triplet, Diehl and Cook, power law and MSTDP."""
    events = []
    applier = None
    reward = getattr(rule, "reference_reward", None)
    for widx, sample, arrivals, posts in synapse_spikes(connection, pre_raster, post_raster, use_delays=use_delays):
        scale = 1.0 if reward is None else rule.gamma * reward[sample]
        for arrival in arrivals:
            step = count_step(arrival)
            earlier_posts = before(posts, step)
            if isinstance(rule, (STDP, MSTDP)):
                mode = getattr(rule, "trace", "all_to_all")
                value = -rule.a_minus * trace(earlier_posts, arrival, rule.tau_minus, mode)
            elif isinstance(rule, TripletSTDP):
                earlier_arrivals = [a for a in arrivals if count_step(a) < step]
                r2 = trace(earlier_arrivals, arrival, rule.tau_x, rule.trace)
                value = -trace(earlier_posts, arrival, rule.tau_minus, rule.trace) * (rule.a2_minus + rule.a3_minus * r2)
            elif isinstance(rule, DiehlCookSTDP):
                value = -rule.nu_pre * trace(earlier_posts, arrival, rule.tau_post1, "nearest")
            else:
                continue
            events.append((step, 0, widx, scale * value))
        for post in posts:
            arrivals_so_far = arrived_by(arrivals, post)
            if isinstance(rule, (STDP, MSTDP)):
                mode = getattr(rule, "trace", "all_to_all")
                value = rule.a_plus * trace(arrivals_so_far, post, rule.tau_plus, mode)
            elif isinstance(rule, TripletSTDP):
                o2 = trace(before(posts, post), post, rule.tau_y, rule.trace)
                value = trace(arrivals_so_far, post, rule.tau_plus, rule.trace) * (rule.a2_plus + rule.a3_plus * o2)
            elif isinstance(rule, DiehlCookSTDP):
                slow = trace(before(posts, post), post, rule.tau_post2, "nearest")
                value = rule.nu_post * trace(arrivals_so_far, post, rule.tau_pre, "nearest") * slow
            elif isinstance(rule, PowerLawSTDP):
                value = trace(arrivals_so_far, post, rule.tau_pre, rule.trace) - rule.x_target
            events.append((post, 1, widx, scale * value))
    if isinstance(rule, PowerLawSTDP):
        def applier(weight, total):
            return rule.eta * total * max(rule.w_max - weight, 0.0) ** rule.exponent
    return apply_events(connection, events, rule.reduce, applier)


def reference_kernel_rule(rule, connection, pre_raster, post_raster, use_delays):
    """Reference for kernel STDP: the kernel of the nearest-spike time differences."""
    kernel = rule.kernel
    events = []
    for widx, sample, arrivals, posts in synapse_spikes(connection, pre_raster, post_raster, use_delays=use_delays):
        for arrival in arrivals:
            step = count_step(arrival)
            earlier_posts = before(posts, step)
            if earlier_posts:
                delta_t = (max(earlier_posts) - arrival) * DT
                events.append((step, 0, widx, float(kernel(torch.tensor([delta_t], dtype=torch.float64))[0])))
        for post in posts:
            arrivals_so_far = arrived_by(arrivals, post)
            if arrivals_so_far:
                delta_t = max(post - max(arrivals_so_far), 0.0) * DT
                events.append((post, 1, widx, float(kernel(torch.tensor([delta_t], dtype=torch.float64))[0])))
    return apply_events(connection, events, rule.reduce)


def reference_mstdpet(rule, connection, pre_raster, post_raster, use_delays, reward):
    """Reference for MSTDPET: per-synapse eligibility ``z`` and ``Δw = gamma * r * z * dt`` at every step."""
    weight = connection.weight.detach().clone()
    per_step = defaultdict(float)
    for widx, sample, arrivals, posts in synapse_spikes(connection, pre_raster, post_raster, use_delays=use_delays):
        increments = []
        for post in posts:
            increments.append((post, rule.a_plus / rule.tau_eligibility * trace(arrived_by(arrivals, post), post, rule.tau_plus)))
        for arrival in arrivals:
            step = count_step(arrival)
            value = rule.a_minus / rule.tau_eligibility * trace(before(posts, step), arrival, rule.tau_minus)
            increments.append((step, -value))
        for step in range(STEPS):
            z = sum(value * math.exp(-(step - at) * DT / rule.tau_eligibility) for at, value in increments if at <= step)
            per_step[(step, widx)] += reward[sample] * z
    for step in range(STEPS):
        for (at, widx), total in sorted(per_step.items()):
            if at == step:
                total = total / BATCH if rule.reduce == "mean" else total
                weight[widx] += rule.gamma * DT * total
    return weight


def reference_delay_rule(rule, connection, pre_raster, post_raster):
    """Reference for delay-adjusted STDP: delay and weight changes at arrivals and postsynaptic spikes."""
    delay_events = defaultdict(float)
    weight_events = defaultdict(float)
    for widx, sample, arrivals, posts in synapse_spikes(connection, pre_raster, post_raster, use_delays=True):
        for arrival in arrivals:
            step = count_step(arrival)
            earlier_posts = before(posts, step)
            if earlier_posts:
                delta_t = (max(earlier_posts) - arrival) * DT
                delay_events[(step, widx)] += rule.b_plus * math.exp(delta_t / rule.tau_plus)
                weight_events[(step, widx)] -= rule.a_minus * math.exp(delta_t / rule.weight_tau_minus)
        for post in posts:
            arrivals_so_far = arrived_by(arrivals, post)
            if arrivals_so_far:
                delta_t = max(post - max(arrivals_so_far), 0.0) * DT
                delay_events[(post, widx)] -= rule.b_minus * math.exp(-delta_t / rule.tau_minus)
                weight_events[(post, widx)] += rule.a_plus * math.exp(-delta_t / rule.weight_tau_plus)
    delay = connection.delay.detach().clone()
    weight = connection.weight.detach().clone()
    for step in range(STEPS):
        for (at, widx), total in delay_events.items():
            if at == step:
                total = total / BATCH if rule.reduce == "mean" else total
                delay[widx] = min(max(float(delay[widx]) + total, connection.min_delay), connection.max_delay)
        for (at, widx), total in weight_events.items():
            if at == step:
                weight[widx] += total / BATCH if rule.reduce == "mean" else total
    return delay, weight


# --------------------------------------------------------------------------- rule versus reference

PAIR_RULES = {
    "stdp_all_to_all": lambda reduce: STDP(a_plus=0.03, a_minus=0.02, tau_plus=4.0, tau_minus=6.0, reduce=reduce),
    "stdp_nearest": lambda reduce: STDP(a_plus=0.03, a_minus=0.02, tau_plus=4.0, tau_minus=6.0, trace="nearest", reduce=reduce),
    "triplet": lambda reduce: TripletSTDP(a2_plus=0.01, a3_plus=0.02, a2_minus=0.015, a3_minus=0.005,
                                          tau_plus=4.0, tau_minus=6.0, tau_x=9.0, tau_y=12.0, reduce=reduce),
    "triplet_nearest": lambda reduce: TripletSTDP(a2_plus=0.01, a3_plus=0.02, a2_minus=0.015, a3_minus=0.005,
                                                  tau_plus=4.0, tau_minus=6.0, tau_x=9.0, tau_y=12.0, trace="nearest", reduce=reduce),
    "diehl_cook": lambda reduce: DiehlCookSTDP(nu_pre=0.02, nu_post=0.05, tau_pre=4.0, tau_post1=5.0, tau_post2=8.0, reduce=reduce),
    "power_law": lambda reduce: PowerLawSTDP(eta=0.05, x_target=0.4, exponent=0.7, tau_pre=4.0, w_max=1.5, reduce=reduce),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(PAIR_RULES))
@pytest.mark.parametrize("delays", [False, True], ids=["no_delay", "delayed"])
def test_trace_rule_matches_reference(kind, name, delays):
    connection = make_connection(kind, delays=delays)
    pre_raster, post_raster = rasters(connection, seed=11)
    rule = PAIR_RULES[name]("mean")
    expected = reference_pair_rule(rule, connection, pre_raster, post_raster, use_delays=True)
    drive(rule, connection, pre_raster, post_raster)
    assert not torch.equal(expected, make_connection(kind, delays=delays).weight.detach()), "the run must change weights"
    torch.testing.assert_close(connection.weight.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_emission_timing_ignores_delays(kind):
    connection = make_connection(kind, delays=True)
    pre_raster, post_raster = rasters(connection, seed=12)
    rule = STDP(a_plus=0.03, a_minus=0.02, tau_plus=4.0, tau_minus=6.0, timing="emission")
    expected = reference_pair_rule(rule, connection, pre_raster, post_raster, use_delays=False)
    drive(rule, connection, pre_raster, post_raster)
    torch.testing.assert_close(connection.weight.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_batch_reduction(kind, reduce):
    connection = make_connection(kind, delays=True)
    pre_raster, post_raster = rasters(connection, seed=13)
    rule = STDP(a_plus=0.03, a_minus=0.02, tau_plus=4.0, tau_minus=6.0, reduce=reduce)
    expected = reference_pair_rule(rule, connection, pre_raster, post_raster, use_delays=True)
    drive(rule, connection, pre_raster, post_raster)
    torch.testing.assert_close(connection.weight.detach(), expected, rtol=1e-10, atol=1e-12)


KERNELS = {
    "exponential": ("exponential", {"a_plus": 0.03, "a_minus": 0.02, "tau_plus": 4.0, "tau_minus": 6.0}),
    "mexican_hat": ("mexican_hat", {"amplitude": 0.02, "sigma": 2.0}),
    "function": (lambda delta_t: 0.01 * torch.tanh(delta_t) + 0.002 * delta_t**2, None),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("delays", [False, True], ids=["no_delay", "delayed"])
def test_kernel_rule_matches_reference(kind, kernel, delays):
    connection = make_connection(kind, delays=delays)
    pre_raster, post_raster = rasters(connection, seed=21)
    function, parameters = KERNELS[kernel]
    rule = KernelSTDP(function, parameters=parameters, reduce="sum")
    expected = reference_kernel_rule(rule, connection, pre_raster, post_raster, use_delays=True)
    drive(rule, connection, pre_raster, post_raster)
    torch.testing.assert_close(connection.weight.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("delays", [False, True], ids=["no_delay", "delayed"])
def test_mstdp_matches_reference(kind, delays):
    connection = make_connection(kind, delays=delays)
    pre_raster, post_raster = rasters(connection, seed=31)
    rule = MSTDP(a_plus=1.0, a_minus=0.8, tau_plus=4.0, tau_minus=6.0, gamma=0.02)
    rule.reference_reward = [1.5, -0.5]
    expected = reference_pair_rule(rule, connection, pre_raster, post_raster, use_delays=True)
    pre, post = make_nodes(connection)
    rule.bind(connection, pre, post)
    rule.set_reward(torch.tensor([1.5, -0.5]))
    for step in range(STEPS):
        pre.spikes, post.spikes = pre_raster[step], post_raster[step]
        rule.step(step)
    torch.testing.assert_close(connection.weight.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("delays", [False, True], ids=["no_delay", "delayed"])
def test_mstdpet_matches_reference(kind, delays):
    connection = make_connection(kind, delays=delays)
    pre_raster, post_raster = rasters(connection, seed=32)
    rule = MSTDPET(a_plus=1.0, a_minus=0.8, tau_plus=4.0, tau_minus=6.0, gamma=0.05, tau_eligibility=7.0, reduce="sum")
    reward = [0.7, -1.2]
    expected = reference_mstdpet(rule, connection, pre_raster, post_raster, True, reward)
    pre, post = make_nodes(connection)
    rule.bind(connection, pre, post)
    rule.set_reward(torch.tensor(reward, dtype=torch.float64))
    for step in range(STEPS):
        pre.spikes, post.spikes = pre_raster[step], post_raster[step]
        rule.step(step)
    torch.testing.assert_close(connection.weight.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_delay_rule_matches_reference(kind):
    connection = make_connection(kind, delays=True)
    pre_raster, post_raster = rasters(connection, seed=41, single_pre=True)
    rule = DelayAdjustedSTDP(b_minus=0.3, b_plus=0.2, tau_minus=2.0, tau_plus=3.0, a_plus=0.02, a_minus=0.01,
                             weight_tau_plus=4.0, weight_tau_minus=5.0)
    expected_delay, expected_weight = reference_delay_rule(rule, connection, pre_raster, post_raster)
    initial = connection.delay.detach().clone()
    drive(rule, connection, pre_raster, post_raster)
    assert not torch.equal(expected_delay, initial), "the run must change delays"
    torch.testing.assert_close(connection.delay.detach(), expected_delay, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(connection.weight.detach(), expected_weight, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- normalisation and homeostasis


@pytest.mark.parametrize("kind", KINDS)
def test_normalization_sets_incoming_sums(kind):
    connection = make_connection(kind, delays=False)
    initial = connection.weight.detach().clone()
    rule = WeightNormalization(target_sum=3.0)
    pre, post = make_nodes(connection)
    rule.bind(connection, pre, post)
    rule.before_sample()
    weight = connection.weight.detach()
    if isinstance(connection, Conv2d):
        # One kernel per output map, shared by every position.
        sums = weight.reshape(weight.shape[0], -1).sum(1).tolist()
        ratios = (weight / initial).reshape(weight.shape[0], -1)
        torch.testing.assert_close(ratios, ratios[:, :1].expand_as(ratios))
    else:
        totals = defaultdict(float)
        for _, post_index, widx in synapse_list(connection):
            totals[post_index] += float(weight[widx])
        sums = list(totals.values())
    assert sums
    assert all(abs(total - 3.0) < 1e-12 for total in sums)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("parameter", ["weight", "delay"])
def test_homeostasis_moves_incoming_parameters(kind, parameter):
    connection = make_connection(kind, delays=True)
    pre_raster, post_raster = rasters(connection, seed=51)
    steps = 8
    rule = Homeostasis(target_rate=200.0, eta=0.05, parameter=parameter, interval=steps * DT)
    before_values = getattr(connection, parameter).detach().clone()
    drive(rule, connection, pre_raster[:steps], post_raster[:steps])

    # Relative rate error per postsynaptic neuron, averaged over the batch.
    rate = post_raster[:steps].reshape(steps, BATCH, -1).sum(0) * 1000.0 / (steps * DT)
    error = ((200.0 - rate) / 200.0).mean(0)
    totals, counts = defaultdict(float), defaultdict(int)
    for _, post_index, widx in synapse_list(connection):
        totals[widx] += float(error[post_index])
        counts[widx] += 1
    expected = before_values.clone()
    sign = 1.0 if parameter == "weight" else -1.0
    for widx in totals:
        expected[widx] += sign * 0.05 * totals[widx] / counts[widx]
    if parameter == "delay":
        expected = expected.clamp(connection.min_delay, connection.max_delay)
    torch.testing.assert_close(getattr(connection, parameter).detach(), expected, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- conv2d equals dense


def conv_and_dense(seed=3):
    """A conv2d whose kernel covers the whole input, and the dense connection with the same synapses."""
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.rand(3, 2, 3, 3, generator=generator, dtype=torch.float64)
    delay = torch.rand(3, 2, 3, 3, generator=generator, dtype=torch.float64) * 3.5
    common = dict(dt=DT, synapse=nn.Identity(), dtype=torch.float64, batch_size=BATCH, max_delay=4.0)
    conv = Conv2d((2, 3, 3), kernel, delay=delay, **common)
    dense = Dense((2, 3, 3), (3, 1, 1), kernel.reshape(3, -1).T.clone(), delay=delay.reshape(3, -1).T.clone(), **common)
    return conv, dense


ALL_RULES = {
    **{name: (lambda factory=factory: factory("mean")) for name, factory in PAIR_RULES.items()},
    "kernel": lambda: KernelSTDP("mexican_hat", parameters={"amplitude": 0.02, "sigma": 2.0}),
    "mstdp": lambda: MSTDP(gamma=0.02),
    "mstdpet": lambda: MSTDPET(gamma=0.05, tau_eligibility=7.0),
    "delay": lambda: DelayAdjustedSTDP(b_minus=0.3, b_plus=0.2, tau_minus=2.0, tau_plus=3.0, a_plus=0.02, a_minus=0.01),
    "homeostasis": lambda: Homeostasis(target_rate=100.0, eta=0.05, interval=4 * DT),
    "normalization": lambda: WeightNormalization(target_sum=2.0, interval=5 * DT),
}


@pytest.mark.parametrize("name", sorted(ALL_RULES))
def test_full_kernel_conv_learns_like_dense(name):
    conv, dense = conv_and_dense()
    generator = torch.Generator().manual_seed(9)
    pre_raster = (torch.rand(STEPS, BATCH, 2, 3, 3, generator=generator) < 0.3).double()
    post_raster = (torch.rand(STEPS, BATCH, 3, 1, 1, generator=generator) < 0.3).double()
    for connection in (conv, dense):
        rule = ALL_RULES[name]()
        pre, post = make_nodes(connection)
        rule.bind(connection, pre, post)
        if hasattr(rule, "set_reward"):
            rule.set_reward(torch.tensor([1.0, -0.4]))
        for step in range(STEPS):
            pre.spikes, post.spikes = pre_raster[step], post_raster[step]
            rule.step(step)
    torch.testing.assert_close(conv.weight.detach().reshape(3, -1).T, dense.weight.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(conv.delay.detach().reshape(3, -1).T, dense.delay.detach(), rtol=1e-10, atol=1e-12)
    initial = conv_and_dense()[0]
    changed = not torch.equal(conv.weight.detach(), initial.weight.detach()) or not torch.equal(conv.delay.detach(), initial.delay.detach())
    assert changed, "the run must change weights or delays"


# --------------------------------------------------------------------------- no spikes


NO_SPIKE_RULES = {name: factory for name, factory in ALL_RULES.items() if name not in ("homeostasis", "normalization")}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(NO_SPIKE_RULES))
def test_no_spikes_change_nothing(kind, name):
    connection = make_connection(kind, delays=True)
    weight, delay = connection.weight.detach().clone(), connection.delay.detach().clone()
    rule = NO_SPIKE_RULES[name]()
    pre, post = make_nodes(connection)
    rule.bind(connection, pre, post)
    if hasattr(rule, "set_reward"):
        rule.set_reward(1.0)
    for step in range(6):
        rule.step(step)
    assert torch.equal(connection.weight.detach(), weight)
    assert torch.equal(connection.delay.detach(), delay)
