"""Spike delivery through every connection type: delays, fractional delays, gradients, learning view."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from ember.connections import Conv2d, Dense, Lateral, OneToOne, Sparse


def synapse_list(connection):
    """Enumerate (pre flat index, post flat index, weight index) for every synapse, brute force."""
    if isinstance(connection, Conv2d):
        maps, channels, kh, kw = connection.weight.shape
        _, height, width = connection.pre_shape
        _, out_h, out_w = connection.post_shape
        (sy, sx), (py, px), (dy, dx) = connection.stride, connection.padding, connection.dilation
        result = []
        for f in range(maps):
            for y in range(out_h):
                for x in range(out_w):
                    for c in range(channels):
                        for ky in range(kh):
                            for kx in range(kw):
                                iy, ix = y * sy - py + ky * dy, x * sx - px + kx * dx
                                if 0 <= iy < height and 0 <= ix < width:
                                    pre = (c * height + iy) * width + ix
                                    post = (f * out_h + y) * out_w + x
                                    result.append((pre, post, (f, c, ky, kx)))
        return result
    if isinstance(connection, Sparse):
        return [(int(i), int(j), (n,)) for n, (i, j) in enumerate(zip(connection.pre_index, connection.post_index))]
    if isinstance(connection, OneToOne):
        return [(i, i, (i,)) for i in range(connection.weight.numel())]
    if isinstance(connection, Lateral):
        size = connection.pre_size
        return [(i, j, (i, j)) for i in range(size) for j in range(size) if i != j]
    return [(i, j, (i, j)) for i in range(connection.pre_size) for j in range(connection.post_size)]


def reference_arrivals(connection, spikes_by_step, steps):
    """Brute-force arrivals per step: each synapse delivers w(1-f) at t+k and w*f at t+k+1."""
    batch = spikes_by_step[0].shape[0]
    post_size = math.prod(connection.post_shape)
    out = torch.zeros(steps, batch, post_size, dtype=torch.float64)
    delays = None if connection.delay is None else connection.delay.detach().double() / connection.dt
    for pre, post, widx in synapse_list(connection):
        w = float(connection.weight.detach()[widx])
        d = 0.0 if delays is None else float(delays[widx])
        whole = math.floor(d + 1e-9)
        frac = max(d - whole, 0.0)
        for t, spikes in enumerate(spikes_by_step):
            flat = spikes.reshape(batch, -1)
            for b in range(batch):
                if flat[b, pre] != 0:
                    if t + whole < steps:
                        out[t + whole, b, post] += w * (1 - frac)
                    if frac and t + whole + 1 < steps:
                        out[t + whole + 1, b, post] += w * frac
    return out


def run_connection(connection, spikes_by_step, steps, grad=False):
    received = []
    with torch.set_grad_enabled(grad):
        for t in range(steps):
            if t < len(spikes_by_step):
                connection.emit(spikes_by_step[t], t)
            received.append(connection.receive(t).reshape(connection.batch_size, -1))
    return torch.stack(received)


def make_connection(kind, *, delay_kind, dtype=torch.float64, batch_size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    common = dict(dt=0.5, synapse=nn.Identity(), dtype=dtype, batch_size=batch_size)

    def delays(shape):
        if delay_kind == "none":
            return None
        values = torch.randint(0, 7, shape, generator=generator).double() * 0.5
        if delay_kind == "fractional":
            values = values + torch.rand(shape, generator=generator, dtype=torch.float64) * 0.5
        return values

    if kind == "dense":
        w = torch.rand(6, 4, generator=generator, dtype=dtype)
        return Dense(6, 4, w, delay=delays((6, 4)), max_delay=4.0 if delay_kind != "none" else None, **common)
    if kind == "lateral":
        w = torch.rand(5, 5, generator=generator, dtype=dtype)
        d = delays((5, 5))
        d = 0.5 if d is None else d.clamp(min=0.5)
        return Lateral(5, w, delay=d, max_delay=4.0, min_delay=0.5, **common)
    if kind == "one_to_one":
        w = torch.rand(5, generator=generator, dtype=dtype)
        return OneToOne(5, w, delay=delays((5,)), max_delay=4.0 if delay_kind != "none" else None, **common)
    if kind == "sparse":
        d = delays((8 * 2,))
        return Sparse.fixed_fan_in(
            6, 8, 2, torch.rand(16, generator=generator, dtype=dtype), generator=generator,
            delay=d, max_delay=4.0 if delay_kind != "none" else None, **common,
        )
    if kind == "conv2d":
        w = torch.rand(2, 1, 3, 3, generator=generator, dtype=dtype)
        return Conv2d(
            (1, 5, 5), w, stride=1, padding=1, delay=delays((2, 1, 3, 3)),
            max_delay=4.0 if delay_kind != "none" else None, **common,
        )
    raise AssertionError(kind)


KINDS = ["dense", "lateral", "one_to_one", "sparse", "conv2d"]


def random_spikes(shape, steps, batch, seed, rate=0.3):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, *shape, generator=generator) < rate).double() for _ in range(steps)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("delay_kind", ["none", "integer", "fractional"])
def test_arrivals_match_brute_force(kind, delay_kind):
    connection = make_connection(kind, delay_kind=delay_kind)
    spikes = random_spikes(connection.pre_shape, 6, connection.batch_size, seed=1)
    steps = 20
    expected = reference_arrivals(connection, spikes, steps)
    received = run_connection(connection, spikes, steps)
    torch.testing.assert_close(received, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("delay_kind", ["integer", "fractional"])
def test_event_and_slot_paths_agree(kind, delay_kind):
    connection = make_connection(kind, delay_kind=delay_kind)
    spikes = random_spikes(connection.pre_shape, 6, connection.batch_size, seed=2)
    event = run_connection(connection, spikes, 16)
    connection.reset_state()
    connection.weight.requires_grad_(True)
    slot = run_connection(connection, spikes, 16, grad=True)
    torch.testing.assert_close(slot.detach(), event, rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_delay_arrival_exact_step():
    connection = Dense(1, 1, torch.tensor([[1.5]]), dt=1.0, delay=3.0, synapse=nn.Identity())
    spike = torch.ones(1, 1)
    arrivals = []
    for t in range(12):
        if t == 5:
            connection.emit(spike, t)
        arrivals.append(float(connection.receive(t)))
    assert arrivals[8] == 1.5
    assert [t for t, value in enumerate(arrivals) if value != 0] == [8]


@torch.no_grad()
def test_delay_in_ms_rounds_without_losing_a_step():
    connection = Dense(1, 1, torch.ones(1, 1), dt=0.1, delay=0.3, synapse=nn.Identity())
    connection.emit(torch.ones(1, 1), 0)
    arrivals = [float(connection.receive(t)) for t in range(6)]
    assert arrivals.index(1.0) == 3
    assert sum(arrivals) == 1.0


@torch.no_grad()
def test_delay_fixed_at_emission():
    connection = Dense(1, 1, torch.ones(1, 1), dt=1.0, delay=4.0, max_delay=8.0, synapse=nn.Identity())
    connection.emit(torch.ones(1, 1), 0)
    with torch.no_grad():
        connection.delay.fill_(1.0)
    connection.emit(torch.ones(1, 1), 1)
    arrivals = [float(connection.receive(t)) for t in range(10)]
    assert arrivals[4] == 1.0  # emitted at 0 with delay 4
    assert arrivals[2] == 1.0  # emitted at 1 with delay 1
    assert sum(arrivals) == 2.0


@torch.no_grad()
def test_fractional_delay_splits_linearly():
    connection = Dense(1, 1, torch.ones(1, 1), dt=1.0, delay=2.25, synapse=nn.Identity())
    connection.emit(torch.ones(1, 1), 0)
    arrivals = [float(connection.receive(t)) for t in range(5)]
    assert arrivals == pytest.approx([0.0, 0.0, 0.75, 0.25, 0.0], abs=1e-7)


@torch.no_grad()
def test_nearest_mode_rounds_delay():
    connection = Dense(1, 1, torch.ones(1, 1), dt=1.0, delay=2.6, delay_mode="nearest", synapse=nn.Identity())
    connection.emit(torch.ones(1, 1), 0)
    arrivals = [float(connection.receive(t)) for t in range(5)]
    assert arrivals == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_weight_shape_mismatch_rejected():
    with pytest.raises(ValueError, match=r"weight must have shape \(pre_size, post_size\) = \(3, 2\)"):
        Dense(3, 2, torch.ones(2, 3), dt=1.0, synapse=nn.Identity())


@pytest.mark.parametrize(
    ("make", "weight_shape", "delay_shape"),
    [
        (lambda delay: Dense(4, 3, torch.rand(4, 3), dt=1.0, delay=delay), (4, 3), (3, 4)),
        (lambda delay: Dense(4, 3, torch.rand(4, 3), dt=1.0, delay=delay), (4, 3), (2, 4, 3)),
        (lambda delay: Lateral(3, torch.rand(3, 3), dt=1.0, delay=delay), (3, 3), (4,)),
        (lambda delay: OneToOne(5, 1.0, dt=1.0, delay=delay), (5,), (4,)),
        (lambda delay: Conv2d((1, 5, 5), torch.rand(2, 1, 3, 3), dt=1.0, delay=delay), (2, 1, 3, 3), (3, 2)),
    ],
    ids=["dense_transposed", "dense_extra_dim", "lateral", "one_to_one", "conv2d"],
)
def test_delay_shape_mismatch_rejected(make, weight_shape, delay_shape):
    with pytest.raises(ValueError, match=r"^delay must be a number or a tensor of the weight's shape") as caught:
        make(torch.ones(delay_shape))
    assert f"shape {weight_shape}" in str(caught.value)
    assert f"got shape {delay_shape}" in str(caught.value)


def test_broadcastable_delay_accepted():
    connection = Dense(4, 3, torch.rand(4, 3), dt=1.0, delay=torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert connection.delay.shape == (4, 3)
    assert connection.delay[:, 2].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_negative_delay_rejected():
    with pytest.raises(ValueError, match="delays must be finite and at least 0 ms"):
        Dense(2, 2, torch.ones(2, 2), dt=1.0, delay=torch.tensor([[-1.0, 0.0], [0.0, 0.0]]), synapse=nn.Identity())


@torch.no_grad()
def test_hard_bound_after_update():
    connection = Dense(1, 1, torch.tensor([[0.95]]), dt=1.0, w_min=0.0, w_max=1.0, synapse=nn.Identity())
    connection.apply_update("weight", torch.tensor([[0.2]]))
    assert connection.weight.item() == 1.0
    connection.emit(torch.ones(1, 1), 0)
    assert connection.receive(0).item() == 1.0
    connection.apply_update("weight", torch.tensor([[-1.5]]))
    assert connection.weight.item() == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_delay_gradcheck(kind):
    connection = make_connection(kind, delay_kind="fractional", batch_size=1)
    spikes = random_spikes(connection.pre_shape, 4, 1, seed=3, rate=0.5)
    readout = torch.rand(12, 1, math.prod(connection.post_shape), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    # Keep delays away from whole steps, where the linear split has a kink.
    base = connection.delay.detach().clone()
    base = torch.floor(base / connection.dt) * connection.dt + 0.2 * connection.dt
    if kind == "lateral":
        base = base.clamp(min=0.6)

    # Replace the delay Parameter with a plain tensor that gradcheck perturbs.
    del connection.delay

    def loss(delay):
        connection.reset_state()
        connection.delay = delay
        received = run_connection(connection, spikes, 12, grad=True)
        return (received * readout).sum()

    delay = base.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (delay,), eps=1e-6, atol=1e-6)


@torch.no_grad()
def test_lateral_has_no_self_connection():
    connection = Lateral(3, torch.ones(3, 3), dt=1.0, synapse=nn.Identity())
    assert torch.all(torch.diagonal(connection.weight) == 0)
    connection.emit(torch.tensor([[1.0, 0.0, 0.0]]), 0)
    arrived = connection.receive(1)
    assert arrived.tolist() == [[0.0, 1.0, 1.0]]


@pytest.mark.parametrize("kind", KINDS)
def test_outer_matches_brute_force(kind):
    connection = make_connection(kind, delay_kind="none", batch_size=3)
    generator = torch.Generator().manual_seed(5)
    pre = (torch.rand(3, *connection.pre_shape, generator=generator) < 0.4).double()
    post = torch.rand(3, *connection.post_shape, generator=generator, dtype=torch.float64)
    expected = torch.zeros_like(connection.weight, dtype=torch.float64)
    pre_flat, post_flat = pre.reshape(3, -1), post.reshape(3, -1)
    for i, j, widx in synapse_list(connection):
        expected[widx] += (pre_flat[:, i] * post_flat[:, j]).sum()
    outer = connection.outer(pre, post, "sum")
    torch.testing.assert_close(outer, expected)
    torch.testing.assert_close(connection.outer(pre, post, "mean"), expected / 3)
    via_layout = connection.fold(connection.synaptic(pre) * connection.postsynaptic(post), "sum")
    torch.testing.assert_close(via_layout, expected)


@pytest.mark.parametrize("name", ["weight", "delay"])
def test_sparse_rejects_wrong_shaped_values(name):
    values = {"weight": torch.ones(3), "delay": None}
    values[name] = torch.ones(5)
    with pytest.raises(ValueError, match=rf"{name} must be a number or a tensor of shape \(3,\).*got shape \(5,\)"):
        Sparse((4,), (2,), pre_index=[0, 1, 3], post_index=[1, 0, 1], weight=values["weight"], dt=1.0, delay=values["delay"])


def test_weight_copied_by_default():
    weight = torch.ones(3, 2)
    connection = Dense(3, 2, weight, dt=1.0)
    weight[0, 0] = 5.0
    assert connection.weight[0, 0].item() == 1.0
    assert connection.weight.data_ptr() != weight.data_ptr()


def test_weight_shared_without_copy():
    weight = torch.ones(3, 2)
    connection = Dense(3, 2, weight, dt=1.0, copy=False)
    assert connection.weight.data_ptr() == weight.data_ptr()
    weight[0, 0] = 5.0
    assert connection.weight[0, 0].item() == 5.0


def test_numpy_weight_shared_without_copy():
    array = np.full((3, 2), 2.0, dtype=np.float32)
    copied = Dense(3, 2, array, dt=1.0)
    shared = Dense(3, 2, array, dt=1.0, copy=False)
    array[1, 1] = 7.0
    assert copied.weight[1, 1].item() == 2.0
    assert shared.weight[1, 1].item() == 7.0


def test_converted_weight_never_shared():
    weight = torch.ones(3, 2, dtype=torch.float64)
    connection = Dense(3, 2, weight, dt=1.0, copy=False)
    assert connection.weight.dtype == torch.float32
    weight[0, 0] = 5.0
    assert connection.weight[0, 0].item() == 1.0


def test_lateral_without_copy_zeroes_caller_diagonal():
    weight = torch.full((3, 3), -1.0)
    Lateral(3, weight, dt=1.0, copy=False)
    assert torch.equal(torch.diagonal(weight), torch.zeros(3))
    assert weight[0, 1].item() == -1.0


def test_sparse_keeps_own_sorted_weights():
    weight = torch.tensor([1.0, 2.0, 3.0])
    connection = Sparse(2, 2, torch.tensor([1, 0, 0]), torch.tensor([0, 1, 0]), weight, dt=1.0)
    weight[0] = 9.0
    # Sorted by (pre, post): (0, 0) weight 3, (0, 1) weight 2, (1, 0) weight 1.
    assert connection.weight.tolist() == [3.0, 2.0, 1.0]


def test_delayed_connection_does_not_import_sympy():
    """torch.broadcast_shapes imports sympy (about 40 MB), which building a connection must not."""
    code = (
        "import sys, torch\n"
        "from ember import Dense\n"
        "Dense(3, 2, torch.ones(3, 2), dt=1.0, delay=torch.ones(3, 1), max_delay=2.0)\n"
        "print('sympy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
