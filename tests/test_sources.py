"""Tests of the input sources: encoded data, explicit spike times, replayed spikes, currents."""

from __future__ import annotations

import pytest
import torch

from ember.core import Node
from ember.encoders import LatencyEncoder, PoissonEncoder
from ember.sources import CurrentInput, EncodedInput, PatternInput, SpikeGenerator, times_to_steps


def spike_list(source: Node, steps: int, first_step: int = 0) -> list[list[int]]:
    """Step a source and return its spikes as [step, sample, flat unit] triples."""
    frames = torch.stack([source.step(t) for t in range(first_step, first_step + steps)])
    flat = frames.reshape(steps, frames.shape[1], -1)
    return flat.nonzero().tolist()


# EncodedInput


def test_encoded_input_matches_encode() -> None:
    rates = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(1)) * 200.0
    source = EncodedInput((4, 5), PoissonEncoder(dt=0.5), dt=0.5, batch_size=3)
    source.seed, source.stream = 42, 7
    source.set_data(rates)
    from_source = torch.stack([source.step(t) for t in range(200)])

    expected = PoissonEncoder(dt=0.5).encode(rates, 200, seed=42, stream=7)
    assert torch.equal(from_source, expected)
    assert torch.equal(source.spikes, expected[-1])


def test_encoded_input_streams_differ() -> None:
    rates = torch.full((1, 100), 100.0)
    outputs = []
    for stream in (0, 1):
        source = EncodedInput(100, PoissonEncoder(dt=1.0), dt=1.0, stream=stream)
        source.set_data(rates)
        outputs.append(torch.stack([source.step(t) for t in range(50)]))

    assert not torch.equal(outputs[0], outputs[1])


def test_encoded_input_set_data_restarts_presentation() -> None:
    source = EncodedInput(2, LatencyEncoder(dt=1.0, window_ms=4.0), dt=1.0)
    source.set_data(torch.tensor([[1.0, 0.5]]))
    first = spike_list(source, 4)
    source.set_data(torch.tensor([[0.5, 1.0]]))
    second = spike_list(source, 4, first_step=4)

    # Latency steps count from each set_data, not from the network step index.
    assert first == [[0, 0, 0], [2, 0, 1]]
    assert second == [[0, 0, 1], [2, 0, 0]]


def test_encoded_input_reset_state_restarts_encoder() -> None:
    source = EncodedInput(1, LatencyEncoder(dt=1.0, window_ms=4.0), dt=1.0)
    source.set_data(torch.tensor([[0.5]]))
    spike_list(source, 4)
    source.reset_state()

    assert spike_list(source, 4, first_step=10) == [[2, 0, 0]]


def test_encoded_input_rejects_bad_data() -> None:
    source = EncodedInput((2, 2), PoissonEncoder(dt=1.0), dt=1.0, batch_size=2)
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\) \(batch_size, \*shape\), got \(1, 2, 2\)"):
        source.set_data(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="rates must be at least 0 Hz"):
        source.set_data(torch.full((2, 2, 2), -3.0))


def test_encoded_input_needs_data() -> None:
    source = EncodedInput(3, PoissonEncoder(dt=1.0), dt=1.0)
    with pytest.raises(RuntimeError, match="call set_data"):
        source.step(0)


def test_encoded_input_batch_change_needs_new_data() -> None:
    source = EncodedInput(3, PoissonEncoder(dt=1.0, mode="exact"), dt=1.0)
    source.set_data(torch.ones(1, 3))
    source.set_batch_size(4)
    with pytest.raises(RuntimeError, match="batch size 4"):
        source.step(0)
    source.set_data(torch.full((4, 3), 50.0))

    assert source.step(0).shape == (4, 3)
    assert source.encoder.budget.shape == (4, 3)


def test_encoded_input_rejects_other_dt() -> None:
    with pytest.raises(ValueError, match="encoder.dt = 1.0 ms differs"):
        EncodedInput(3, PoissonEncoder(dt=1.0), dt=0.5)


def test_encoded_input_converts_dtype() -> None:
    source = EncodedInput(4, PoissonEncoder(dt=1.0), dt=1.0, dtype=torch.float64)
    source.set_data(torch.tensor([[0, 0, 1000, 1000]], dtype=torch.int32))
    spikes = source.step(0)

    assert spikes.dtype == torch.float64
    assert spikes.tolist() == [[0.0, 0.0, 1.0, 1.0]]


# SpikeGenerator


def test_spike_generator_exact_steps() -> None:
    source = SpikeGenerator((2, 3), times_ms=[0.3, 0.0, 1.2, 0.3], indices=[5, 0, 4, 1], dt=0.1)

    assert spike_list(source, 13) == [[0, 0, 0], [3, 0, 1], [3, 0, 5], [12, 0, 4]]
    assert source.num_steps == 13
    assert source.spikes.shape == (1, 2, 3)


def test_spike_generator_per_sample_events() -> None:
    source = SpikeGenerator(4, [1.0, 1.0, 2.0], [3, 3, 0], dt=1.0, sample=[0, 2, 1], batch_size=3)

    assert spike_list(source, 3) == [[1, 0, 3], [1, 2, 3], [2, 1, 0]]


def test_spike_generator_broadcasts_without_sample() -> None:
    source = SpikeGenerator(2, [0.0], [1], dt=1.0, batch_size=3)

    assert source.step(0).tolist() == [[0.0, 1.0]] * 3


def test_spike_generator_fractional_time_error() -> None:
    with pytest.raises(ValueError, match=r"times_ms\[1\] = 0.25 ms is not a whole number of steps at dt = 0.1 ms"):
        SpikeGenerator(3, [0.1, 0.25], [0, 1], dt=0.1)


def test_times_to_steps_nearest_rule() -> None:
    steps = times_to_steps(torch.tensor([0.24, 0.25, 0.26, 0.3, 0.35]), 0.1, rounding="nearest")

    # Halfway values go to the later step; float32 0.35 is 3.4999999 steps and still counts as halfway.
    assert steps.tolist() == [2, 3, 3, 3, 4]


def test_spike_generator_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="events 0 and 1 .* on unit 2 in step 3"):
        SpikeGenerator(4, [0.3, 0.26], [2, 2], dt=0.1, rounding="nearest")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"times_ms": [1.0], "indices": [6]}, r"indices\[0\] = 6 is outside \[0, 6\)"),
        ({"times_ms": [1.0, 2.0], "indices": [0]}, "times_ms has 2 events but indices has 1"),
        ({"times_ms": [-1.0], "indices": [0]}, "finite and at least 0 ms"),
        ({"times_ms": [1.0], "indices": [0.5]}, "indices must be whole numbers"),
        ({"times_ms": [1.0], "indices": [0], "sample": [1]}, r"sample\[0\] = 1 is outside \[0, 1\)"),
    ],
)
def test_spike_generator_rejects_bad_events(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpikeGenerator((2, 3), dt=1.0, **kwargs)


def test_spike_generator_without_events() -> None:
    source = SpikeGenerator(3, [], [], dt=1.0)

    assert source.num_steps == 0
    assert source.step(0).sum().item() == 0.0


def test_spike_generator_batch_below_sample() -> None:
    source = SpikeGenerator(2, [0.0], [1], dt=1.0, sample=[2], batch_size=3)
    source.set_batch_size(2)
    with pytest.raises(RuntimeError, match="events for sample 2 but the batch size is now 2"):
        source.step(0)


# PatternInput


def test_pattern_input_replays_frames() -> None:
    frames = (torch.rand(6, 2, 3, 3, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    source = PatternInput((3, 3), 1.0, frames, batch_size=2)
    replay = torch.stack([source.step(t) for t in range(100, 108)])

    assert torch.equal(replay[:6], frames)
    assert replay[6:].sum().item() == 0.0


def test_pattern_input_repeat_and_restart() -> None:
    frames = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]])
    source = PatternInput(2, 1.0, frames, after_end="repeat")
    looped = [source.step(t).tolist() for t in range(5)]
    source.reset_state()

    assert looped == [[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]
    assert source.step(5).tolist() == [[1.0, 0.0]]


def test_pattern_input_error_after_end() -> None:
    source = PatternInput(1, 1.0, torch.ones(2, 1, 1), after_end="error")
    source.step(0)
    source.step(1)
    with pytest.raises(RuntimeError, match="ran past its 2 frames at presentation step 2"):
        source.step(2)


def test_pattern_input_rejects_bad_spikes() -> None:
    source = PatternInput(3, 1.0, batch_size=2)
    with pytest.raises(ValueError, match=r"shape \(T, 2, 3\), got \(4, 1, 3\)"):
        source.set_data(torch.zeros(4, 1, 3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        source.set_data(torch.full((4, 2, 3), 0.5))
    with pytest.raises(RuntimeError, match="call set_data"):
        source.step(0)


def test_pattern_input_accepts_uint8() -> None:
    source = PatternInput(2, 1.0, torch.tensor([[[0, 1]]], dtype=torch.uint8))

    assert source.step(0).tolist() == [[0.0, 1.0]]
    assert source.step(0).dtype == torch.float32


# CurrentInput


def test_current_input_constant_with_window() -> None:
    source = CurrentInput((2,), torch.tensor([0.5, -0.25]), 0.1, start_ms=1.0, stop_ms=2.0, batch_size=2)
    values = [source.current(t) for t in (0, 9, 10, 19, 20)]

    assert [v.shape for v in values] == [(2, 2)] * 5
    assert [v[1].tolist() for v in values] == [[0.0, 0.0], [0.0, 0.0], [0.5, -0.25], [0.5, -0.25], [0.0, 0.0]]


def test_current_input_callable() -> None:
    source = CurrentInput(3, lambda step: 0.1 * step, 1.0)

    assert torch.allclose(source.current(7), torch.full((1, 3), 0.7))
    assert source.step(7).tolist() == [[0.0, 0.0, 0.0]]


def test_current_input_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"current_nA has shape \(4,\), which does not broadcast to \(1, 3\)"):
        CurrentInput(3, torch.ones(4), 1.0)
    source = CurrentInput(3, lambda step: torch.ones(2), 1.0)
    with pytest.raises(ValueError, match=r"current_nA\(5\) has shape \(2,\)"):
        source.current(5)


def test_current_input_rejects_bad_window() -> None:
    with pytest.raises(ValueError, match="stop_ms = 1.0 ms is before start_ms = 2.0 ms"):
        CurrentInput(3, 1.0, 1.0, start_ms=2.0, stop_ms=1.0)
    with pytest.raises(ValueError, match="start_ms of 0.15 ms is not a whole number of steps"):
        CurrentInput(3, 1.0, 0.1, start_ms=0.15)


# Devices

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_sources_on_device(device: str) -> None:
    rates = torch.rand(2, 6, generator=torch.Generator().manual_seed(0)).to(device) * 300.0
    for encoder in (PoissonEncoder(dt=1.0), PoissonEncoder(dt=1.0, mode="exact"), LatencyEncoder(dt=1.0, window_ms=8.0)):
        x = rates / 300.0 if isinstance(encoder, LatencyEncoder) else rates
        source = EncodedInput(6, encoder, dt=1.0, batch_size=2, seed=3, device=device)
        source.set_data(x)
        from_source = torch.stack([source.step(t) for t in range(30)])
        expected = type(encoder)(**_encoder_settings(encoder)).encode(x, 30, seed=3)

        assert from_source.device.type == device
        assert torch.equal(from_source, expected)

    replay = PatternInput(6, 1.0, torch.ones(3, 2, 6, device=device), batch_size=2, device=device)
    assert replay.step(0).device.type == device
    events = SpikeGenerator(6, [1.0], [2], dt=1.0, device=device)
    assert events.step(1)[0, 2].item() == 1.0
    assert CurrentInput(6, 0.5, 1.0, device=device).current(0).device.type == device


def _encoder_settings(encoder: object) -> dict:
    if isinstance(encoder, LatencyEncoder):
        return {"dt": encoder.dt, "window_ms": encoder.window_ms}
    return {"dt": encoder.dt, "mode": encoder.mode}
