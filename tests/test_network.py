"""Network stepping: order, cycles, chunked runs, reset, batches, checkpoints, devices, monitors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ember.checkpoint import network_tensors
from ember.connections import Conv2d, Dense, Lateral, OneToOne, Sparse
from ember.encoders import PoissonEncoder
from ember.monitors import SpikeCountMonitor, SpikeMonitor, StateMonitor
from ember.network import Network, NetworkError
from ember.neurons import LIF, AdaptiveLIF
from ember.sources import EncodedInput, SpikeGenerator
from ember.synapses import Delta, ExponentialCurrent

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def skip_without(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def build_network(*, batch_size=1, seed=7, device="cpu", delays=True):
    """Poisson input -> delayed dense -> adaptive LIF with lateral inhibition -> one-to-one LIF."""
    generator = torch.Generator().manual_seed(3)
    net = Network(dt=1.0, batch_size=batch_size, seed=seed)
    source = net.add("input", EncodedInput(20, PoissonEncoder(dt=1.0), dt=1.0))
    source.set_data(torch.full((batch_size, 20), 80.0))
    net.add("excitatory", AdaptiveLIF(8, dt=1.0, tau_mem=20.0, v_rest=-65.0, v_reset=-65.0, v_threshold=-60.0,
                                      refractory_period=2.0, theta_plus=0.5, tau_theta=50.0, theta_shared=False))
    net.add("readout", LIF(8, dt=1.0, tau_mem=10.0, v_threshold=-63.0))
    delay = torch.randint(0, 6, (20, 8), generator=generator).float() + 0.5 if delays else None
    net.connect("input_to_excitatory", "input", "excitatory",
                Dense(20, 8, torch.rand(20, 8, generator=generator) * 3.0, dt=1.0, delay=delay,
                      max_delay=6.0 if delays else None, synapse=ExponentialCurrent(dt=1.0, tau_syn=5.0)))
    net.connect("inhibition", "excitatory", "excitatory", Lateral(8, torch.full((8, 8), -2.0), dt=1.0))
    net.connect("excitatory_to_readout", "excitatory", "readout", OneToOne(8, 3.0, dt=1.0, delay=2.0))
    net.add_monitor("spikes", SpikeMonitor("excitatory"))
    net.add_monitor("readout_spikes", SpikeMonitor("readout"))
    return net.to(device)


def events(net, name):
    chunk = net.monitors[name].spike_events()
    return np.stack([chunk.step, chunk.index, chunk.sample])


def test_zero_delay_target_sees_spike_same_step():
    net = Network(dt=1.0)
    net.add("input", SpikeGenerator(1, times_ms=[3.0], indices=[0], dt=1.0))
    net.add("output", LIF(1, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0))
    net.connect("link", "input", "output", Dense(1, 1, torch.full((1, 1), 5.0), dt=1.0, synapse=Delta(dt=1.0)))
    net.add_monitor("out", SpikeMonitor("output"))
    net.run(6)
    assert events(net, "out")[0].tolist() == [3]


def test_cycle_without_delay_rejected():
    net = Network(dt=1.0)
    net.add("a", LIF(2, dt=1.0))
    net.add("b", LIF(2, dt=1.0))
    net.connect("a_to_b", "a", "b", Dense(2, 2, torch.ones(2, 2), dt=1.0))
    with pytest.raises(NetworkError, match=r"\['a_to_b', 'b_to_a'\]"):
        net.connect("b_to_a", "b", "a", Dense(2, 2, torch.ones(2, 2), dt=1.0))


def test_cycle_with_one_step_delay_accepted():
    net = Network(dt=1.0)
    net.add("a", LIF(2, dt=1.0))
    net.add("b", LIF(2, dt=1.0))
    net.connect("a_to_b", "a", "b", Dense(2, 2, torch.ones(2, 2), dt=1.0))
    net.connect("b_to_a", "b", "a", Dense(2, 2, torch.ones(2, 2), dt=1.0, delay=1.0, min_delay=1.0))
    assert net.topological_order() == ["a", "b"]


def test_shape_mismatch_rejected():
    net = Network(dt=1.0)
    net.add("a", LIF(3, dt=1.0))
    net.add("b", LIF(2, dt=1.0))
    with pytest.raises(NetworkError, match=r"pre_shape \(4,\) does not match node 'a' shape \(3,\)"):
        net.connect("link", "a", "b", Dense(4, 2, torch.ones(4, 2), dt=1.0))


def test_chunked_run_equals_one_run():
    whole = build_network()
    whole.run(120)
    chunked = build_network()
    for chunk in (1, 7, 50, 62):
        chunked.run(chunk)
    assert events(whole, "spikes").shape[1] > 10
    np.testing.assert_array_equal(events(whole, "spikes"), events(chunked, "spikes"))
    np.testing.assert_array_equal(events(whole, "readout_spikes"), events(chunked, "readout_spikes"))
    for name, tensor in network_tensors(whole).items():
        torch.testing.assert_close(tensor, network_tensors(chunked)[name], rtol=0, atol=0, msg=name)


def test_same_seed_same_spikes_other_seed_differs():
    first, second, other = build_network(seed=1), build_network(seed=1), build_network(seed=2)
    for net in (first, second, other):
        net.run(80)
    np.testing.assert_array_equal(events(first, "spikes"), events(second, "spikes"))
    assert not np.array_equal(events(first, "spikes"), events(other, "spikes"))


def test_reset_then_run_equals_fresh_network():
    used = build_network()
    used.run(60)
    used.monitors["spikes"].clear()
    used.reset_state()
    used.run(60)
    fresh = build_network()
    fresh.run(60)
    np.testing.assert_array_equal(events(used, "spikes"), events(fresh, "spikes"))


def test_sample_key_changes_noise():
    net = build_network()
    net.run(50)
    first = events(net, "spikes")
    net.monitors["spikes"].clear()
    net.reset_state()
    net.sample_key.fill_(1)
    net.run(50)
    assert not np.array_equal(first, events(net, "spikes"))


def make_typed_network(kind, delays, samples=(0, 1)):
    """Spike generator -> connection of the given kind -> LIF; the batch holds the given input patterns."""
    batch_size = len(samples)
    generator = torch.Generator().manual_seed(11)
    net = Network(dt=1.0, batch_size=batch_size)
    if kind == "conv2d":
        pre_shape, post_shape = (1, 4, 4), (2, 4, 4)
    elif kind in ("one_to_one", "lateral"):
        pre_shape, post_shape = (6,), (6,)
    else:
        pre_shape, post_shape = (6,), (4,)
    size = int(np.prod(pre_shape))
    times, indices = [], []
    positions = []
    for position, pattern in enumerate(samples):
        for t in range(15):
            for i in range(size):
                if (i * 7 + t * 3 + pattern * 5) % 4 == 0:
                    times.append(float(t))
                    indices.append(i)
                    positions.append(position)
    net.add("input", SpikeGenerator(pre_shape, times_ms=times, indices=indices, sample=positions, dt=1.0, batch_size=batch_size))
    net.add("output", LIF(post_shape, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.5, tau_mem=5.0))
    options = dict(dt=1.0, synapse=Delta(dt=1.0))
    if kind == "dense":
        weight = torch.rand(6, 4, generator=generator)
        delay = torch.rand(6, 4, generator=generator) * 4 if delays else None
        connection = Dense(6, 4, weight, delay=delay, max_delay=4.0 if delays else None, **options)
    elif kind == "one_to_one":
        delay = torch.rand(6, generator=generator) * 4 if delays else None
        connection = OneToOne(6, torch.rand(6, generator=generator) + 0.5, delay=delay, max_delay=4.0 if delays else None, **options)
    elif kind == "sparse":
        delay = torch.rand(8, generator=generator) * 4 if delays else None
        connection = Sparse.fixed_fan_in(6, 4, 2, torch.rand(8, generator=generator) + 0.5, generator=generator,
                                         delay=delay, max_delay=4.0 if delays else None, **options)
    elif kind == "conv2d":
        delay = torch.rand(2, 1, 3, 3, generator=generator) * 4 if delays else None
        connection = Conv2d((1, 4, 4), torch.rand(2, 1, 3, 3, generator=generator), padding=1, delay=delay,
                            max_delay=4.0 if delays else None, **options)
    else:
        net.add("drive", LIF(6, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=0.5))
        net.connect("drive_link", "input", "drive", OneToOne(6, 1.0, **options))
        delay = torch.rand(6, 6, generator=generator) * 3 + 1 if delays else 1.0
        connection = Lateral(6, torch.rand(6, 6, generator=generator), delay=delay, max_delay=4.0, min_delay=1.0, **options)
        net.connect("link", "drive", "output", connection)
        net.add_monitor("out", SpikeMonitor("output"))
        return net
    net.connect("link", "input", "output", connection)
    net.add_monitor("out", SpikeMonitor("output"))
    return net


@pytest.mark.parametrize("kind", ["dense", "one_to_one", "lateral", "sparse", "conv2d"])
@pytest.mark.parametrize("delays", [False, True])
def test_batch_equals_separate_runs(kind, delays):
    batch = make_typed_network(kind, delays, samples=(0, 1, 2))
    batch.run(25)
    batch_events = events(batch, "out")
    assert batch_events.shape[1] > 0
    for pattern in range(3):
        single = make_typed_network(kind, delays, samples=(pattern,))
        single.run(25)
        mine = batch_events[:2, batch_events[2] == pattern]
        np.testing.assert_array_equal(mine, events(single, "out")[:2])


def test_checkpoint_resume_in_fresh_process(tmp_path):
    whole = build_network()
    whole.run(80)
    expected = events(whole, "spikes")

    first = build_network()
    first.run(37)
    in_flight = first.connections["input_to_excitatory"].in_flight
    assert in_flight.abs().sum() > 0, "the test needs spikes in flight at the checkpoint"
    first_events = events(first, "spikes")
    first.save(tmp_path / "checkpoint.safetensors")

    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_network import build_network, events
        net = build_network()
        net.load({str(tmp_path / 'checkpoint.safetensors')!r})
        net.run(43)
        np.save({str(tmp_path / 'rest.npy')!r}, events(net, "spikes"))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(tmp_path))
    rest = np.load(tmp_path / "rest.npy")
    np.testing.assert_array_equal(np.concatenate([first_events, rest], axis=1), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_to_device_moves_every_tensor(device):
    skip_without(device)
    net = build_network()
    net.add_monitor("voltage", StateMonitor("excitatory", "v", every=2, capacity=10))
    net.run(10)
    net.to(device)
    for name, tensor in net.state_dict().items():
        assert tensor.device.type == device, name
    net.run(10)


@pytest.mark.gpu
def test_cpu_checkpoint_continues_on_cuda(tmp_path):
    skip_without("cuda")
    generator_net = make_typed_network("dense", True)
    generator_net.run(8)
    generator_net.save(tmp_path / "c.safetensors")
    reference = make_typed_network("dense", True)
    reference.load(tmp_path / "c.safetensors")
    reference.run(17)
    moved = make_typed_network("dense", True)
    moved.load(tmp_path / "c.safetensors", map_location="cuda")
    moved.run(17)
    np.testing.assert_array_equal(events(reference, "out"), events(moved, "out"))


def test_spike_monitor_memory_is_bounded():
    net = build_network()
    received = []
    net.add_monitor("bounded", SpikeMonitor("input", chunk_size=256, sink=received.append))
    net.add_monitor("count", SpikeCountMonitor("input"))
    net.run(10_000)
    net.monitors["bounded"].flush()
    assert net.monitors["bounded"].events.numel() == 3 * 256
    assert all(len(chunk) <= 256 for chunk in received)
    total = sum(len(chunk) for chunk in received)
    assert total == int(net.monitors["count"].counts.sum())
    steps = np.concatenate([chunk.step for chunk in received])
    assert np.all(np.diff(steps) >= 0)


def test_spike_monitor_max_events_enforced():
    net = build_network()
    net.add_monitor("limited", SpikeMonitor("input", chunk_size=16, max_events=32))
    with pytest.raises(RuntimeError, match="max_events = 32"):
        net.run(200)


def test_state_monitor_ring_buffer_keeps_last_records():
    net = build_network()
    net.add_monitor("voltage", StateMonitor("excitatory", "v", every=3, capacity=4))
    net.run(30)
    steps, values = net.monitors["voltage"].history()
    assert steps.tolist() == [18, 21, 24, 27]
    assert values.shape == (4, 1, 8)


def test_rejected_connection_is_not_kept():
    net = Network(dt=1.0)
    net.add("a", LIF(2, dt=1.0))
    net.add("b", LIF(2, dt=1.0))
    net.connect("a_to_b", "a", "b", Dense(2, 2, torch.ones(2, 2), dt=1.0))
    with pytest.raises(NetworkError):
        net.connect("b_to_a", "b", "a", Dense(2, 2, torch.ones(2, 2), dt=1.0))
    assert list(net.connections) == ["a_to_b"]
    net.run(2)


def unsupported_native_network() -> Network:
    """A network the native kernels reject: STDP timed at arrival through fractional delays."""
    from ember.learning import STDP

    net = Network(dt=1.0, seed=2, engine="native")
    net.add("input", SpikeGenerator(4, times_ms=[1.0, 2.0], indices=[0, 1], dt=1.0))
    net.add("output", LIF(3, dt=1.0))
    net.connect("link", "input", "output", Dense(4, 3, torch.ones(4, 3), dt=1.0, delay=torch.full((4, 3), 1.5)))
    net.add_rule("learn", STDP(a_plus=0.01, a_minus=0.01, tau_plus=10.0, tau_minus=10.0), "link")
    return net


def test_native_reason_names_auto_once():
    from ember.native import runner

    if runner.kernels() is None:
        pytest.skip("no C compiler for the native kernels")
    net = unsupported_native_network()
    with pytest.raises(NetworkError) as caught:
        net.run(3)
    message = str(caught.value)
    assert message.startswith("engine='native' cannot run this network: learning rule 'learn'")
    assert "timing='emission'" in message
    assert message.count("engine='auto'") == 1
    net.engine = "auto"
    net.run(3)
    assert int(net.step_count) == 3


def test_native_switched_off_suggests_auto(monkeypatch):
    monkeypatch.setenv("EMBER_NATIVE", "0")
    net = unsupported_native_network()
    with pytest.raises(NetworkError) as caught:
        net.run(3)
    message = str(caught.value)
    assert "EMBER_NATIVE=0" in message
    assert message.endswith("; set engine='auto' to fall back to PyTorch")
    assert message.count("engine='auto'") == 1
