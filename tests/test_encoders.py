"""Tests of the Poisson, latency and rank-order encoders."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ember.encoders import LatencyEncoder, PoissonEncoder, RankOrderEncoder, RateSaturationWarning, rank_descending
from ember.random import step_generator

# Statistical checks allow 5 standard deviations: with fixed seeds they are
# deterministic, and a correct encoder would fail one with a new seed with
# probability below 1e-6.
SIGMAS = 5.0


def spike_steps_of(spikes: torch.Tensor) -> list[int]:
    """Return the steps at which a single train (T,) spikes."""
    return spikes.nonzero()[:, 0].tolist()


# Poisson, Bernoulli mode


@pytest.mark.parametrize("rate_hz", [10.0, 40.0, 250.0])
def test_bernoulli_mean_rate(rate_hz: float) -> None:
    dt, steps = 0.5, 2000
    encoder = PoissonEncoder(dt=dt)
    spikes = encoder.encode(torch.full((8, 100), rate_hz), steps, seed=11)

    trials = spikes.numel()
    p = rate_hz * dt / 1000.0
    expected = trials * p
    sigma = math.sqrt(trials * p * (1.0 - p))
    assert abs(spikes.sum().item() - expected) < SIGMAS * sigma


def test_bernoulli_zero_and_max_rate_are_exact() -> None:
    encoder = PoissonEncoder(dt=1.0)
    spikes = encoder.encode(torch.tensor([[0.0, 1000.0]]), 500, seed=3)

    assert spikes[:, 0, 0].sum().item() == 0.0
    assert spikes[:, 0, 1].sum().item() == 500.0


def test_bernoulli_outputs_are_binary() -> None:
    spikes = PoissonEncoder(dt=1.0).encode(torch.full((2, 3, 4), 300.0), 50, seed=0)

    assert spikes.shape == (50, 2, 3, 4)
    assert spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_bernoulli_saturation_warns_and_fires_every_step() -> None:
    encoder = PoissonEncoder(dt=1.0)
    with pytest.warns(RateSaturationWarning, match="above 1000 / dt = 1000.0 Hz"):
        spikes = encoder.encode(torch.full((1, 5), 2500.0), 200, seed=0)

    assert spikes.sum().item() == 200 * 5  # one spike per step: 1000 Hz, not 2500 Hz


def test_saturation_clip_is_silent() -> None:
    encoder = PoissonEncoder(dt=1.0, saturation="clip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spikes = encoder.encode(torch.full((1, 5), 2500.0), 20, seed=0)

    assert spikes.sum().item() == 20 * 5


def test_saturation_raise_rejects_rate() -> None:
    encoder = PoissonEncoder(dt=0.1, saturation="raise")
    with pytest.raises(ValueError, match="10000.0 Hz"):
        encoder.encode(torch.full((1, 5), 20000.0), 10, seed=0)


def test_saturation_warns_once_per_tensor() -> None:
    encoder = PoissonEncoder(dt=1.0)
    rates = torch.full((1, 3), 5000.0)
    with pytest.warns(RateSaturationWarning) as record:
        for t in range(5):
            encoder.step(rates, t, step_generator(0, 0, t, "cpu"))

    assert len(record) == 1


def test_poisson_same_seed_same_spikes() -> None:
    rates = torch.full((4, 50), 80.0)
    for mode in ("bernoulli", "exact"):
        first = PoissonEncoder(dt=1.0, mode=mode).encode(rates, 300, seed=5)
        second = PoissonEncoder(dt=1.0, mode=mode).encode(rates, 300, seed=5)
        other_seed = PoissonEncoder(dt=1.0, mode=mode).encode(rates, 300, seed=6)
        other_stream = PoissonEncoder(dt=1.0, mode=mode).encode(rates, 300, seed=5, stream=1)

        assert torch.equal(first, second)
        assert not torch.equal(first, other_seed)
        assert not torch.equal(first, other_stream)


@pytest.mark.parametrize("rates", [[[-1.0, 2.0]], [[float("nan"), 2.0]]])
def test_poisson_rejects_invalid_rates(rates: list[list[float]]) -> None:
    with pytest.raises(ValueError, match="rates must"):
        PoissonEncoder(dt=1.0).encode(torch.tensor(rates), 5, seed=0)


def test_poisson_needs_generator() -> None:
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        PoissonEncoder(dt=1.0).step(torch.ones(1, 2), 0, None)


def test_poisson_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match=r"mode must be one of \('bernoulli', 'exact'\)"):
        PoissonEncoder(dt=1.0, mode="gauss")  # type: ignore[arg-type]


# Poisson, exact mode


def test_exact_isi_mean_and_shape() -> None:
    rate_hz, dt, steps = 50.0, 0.1, 20_000
    spikes = PoissonEncoder(dt=dt, mode="exact").encode(torch.full((1, 200), rate_hz), steps, seed=21)

    intervals = []
    for unit in range(200):
        times = torch.tensor(spike_steps_of(spikes[:, 0, unit]), dtype=torch.float64) * dt
        intervals.append(torch.diff(times))
    isi = torch.cat(intervals)
    n = isi.numel()

    mean_ms = 1000.0 / rate_hz
    # An exponential ISI has standard deviation equal to its mean.
    assert abs(isi.mean().item() - mean_ms) < SIGMAS * mean_ms / math.sqrt(n)
    # P(ISI > mean) = exp(-1) for an exponential distribution.
    above = (isi > mean_ms).double().mean().item()
    p = math.exp(-1.0)
    assert abs(above - p) < SIGMAS * math.sqrt(p * (1 - p) / n)


def test_exact_mean_rate_near_max_rate() -> None:
    rate_hz, dt, steps, units = 800.0, 1.0, 5000, 40
    encoder = PoissonEncoder(dt=dt, mode="exact")
    spikes = encoder.encode(torch.full((1, units), rate_hz), steps, seed=4)

    expected = units * steps * rate_hz * dt / 1000.0
    # Event counts are Poisson (variance = mean); events still queued at the
    # end are not emitted, which the backlog term bounds.
    backlog = -encoder.budget.clamp(max=0.0).sum().item() + units
    assert abs(spikes.sum().item() - expected) < SIGMAS * math.sqrt(expected) + backlog


def test_exact_saturation_fires_every_step_and_queues() -> None:
    encoder = PoissonEncoder(dt=1.0, mode="exact", saturation="clip")
    high = torch.full((1, 1), 2000.0)
    silent = torch.zeros(1, 1)

    saturated = [encoder.step(high, t, step_generator(1, 0, t, "cpu")).item() for t in range(100)]
    queued = [encoder.step(silent, t, step_generator(1, 0, t, "cpu")).item() for t in range(100, 300)]

    assert sum(saturated) == 100
    # About 2 events per step arrived and 1 per step left, so ~100 are still
    # queued (Poisson count of 200, sd ~14) and fire after the rate drops.
    assert 40 < sum(queued) < 160
    assert queued[: int(sum(queued))] == [1.0] * int(sum(queued))


def test_exact_restart_clears_backlog() -> None:
    encoder = PoissonEncoder(dt=1.0, mode="exact", saturation="clip")
    for t in range(50):
        encoder.step(torch.full((1, 1), 3000.0), t, step_generator(1, 0, t, "cpu"))
    encoder.restart()
    after = [encoder.step(torch.zeros(1, 1), t, step_generator(1, 0, t, "cpu")).item() for t in range(50)]

    assert sum(after) == 0.0


def test_exact_follows_rate_change_without_restart() -> None:
    encoder = PoissonEncoder(dt=1.0, mode="exact")
    rates = torch.zeros(1, 2000)
    silent = sum(encoder.step(rates, t, step_generator(9, 0, t, "cpu")).sum().item() for t in range(20))
    rates = torch.full((1, 2000), 100.0)
    active = sum(encoder.step(rates, t, step_generator(9, 0, t, "cpu")).sum().item() for t in range(20, 120))

    expected = 2000 * 100 * 0.1
    assert silent == 0.0
    assert abs(active - expected) < SIGMAS * math.sqrt(expected) + 2000 * 0.01


def test_exact_resumes_from_state_dict() -> None:
    rates = torch.full((2, 30), 120.0)
    reference = PoissonEncoder(dt=1.0, mode="exact").encode(rates, 100, seed=8)

    first = PoissonEncoder(dt=1.0, mode="exact")
    for t in range(50):
        first.step(rates, t, step_generator(8, 0, t, "cpu"))
    resumed = PoissonEncoder(dt=1.0, mode="exact")
    resumed.bind((30,), 2)
    resumed.load_state_dict(first.state_dict())
    tail = torch.stack([resumed.step(rates, t, step_generator(8, 0, t, "cpu")) for t in range(50, 100)])

    assert torch.equal(tail, reference[50:])


# Latency


def test_latency_reference_cases() -> None:
    encoder = LatencyEncoder(dt=1.0, window_ms=10.0)
    spikes = encoder.encode(torch.tensor([[1.0, 0.5, 0.0, 0.9, 1e-6]]), 10)[:, 0]

    assert spike_steps_of(spikes[:, 0]) == [0]
    assert spike_steps_of(spikes[:, 1]) == [5]
    assert spike_steps_of(spikes[:, 2]) == []
    assert spike_steps_of(spikes[:, 3]) == [1]  # (1 - 0.9) * 10 is 0.99999... in floating point
    assert spike_steps_of(spikes[:, 4]) == [9]  # the weakest input fires in the last step


def test_latency_never_fires_after_window() -> None:
    encoder = LatencyEncoder(dt=0.5, window_ms=5.0)
    spikes = encoder.encode(torch.rand(3, 40, generator=torch.Generator().manual_seed(0)), 25)

    assert spikes[10:].sum().item() == 0.0
    assert torch.equal(spikes.sum(0), torch.ones(3, 40))


@pytest.mark.parametrize("mapping", ["linear", "log"])
def test_latency_monotonic_sweep(mapping: str) -> None:
    intensities = torch.linspace(0.0, 1.0, 1001)
    encoder = LatencyEncoder(dt=0.1, window_ms=20.0, mapping=mapping)
    steps = encoder.spike_steps(intensities)

    fires = intensities > 0
    assert steps[0].item() == -1
    assert steps[-1].item() == 0
    assert bool((steps[fires] >= 0).all())
    assert bool((steps[fires] <= 199).all())
    # Along increasing intensity the spike step never increases.
    assert bool((torch.diff(steps[fires]) <= 0).all())

    spikes = encoder.encode(intensities[None, :], 200)[:, 0]
    assert torch.equal(spikes.sum(0), fires.float())
    assert torch.equal(spikes.argmax(0)[fires], steps[fires])


def test_latency_log_mapping_values() -> None:
    encoder = LatencyEncoder(dt=1.0, window_ms=100.0, mapping="log", log_floor=0.01)
    steps = encoder.spike_steps(torch.tensor([1.0, 0.1, 0.01, 0.001]))

    # f = ln(x) / ln(0.01): 0, 1/2, 1 (clipped to the last step), below the floor also last.
    assert steps.tolist() == [0, 50, 99, 99]


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan")])
def test_latency_rejects_out_of_range(value: float) -> None:
    with pytest.raises(ValueError, match=r"intensities must"):
        LatencyEncoder(dt=1.0, window_ms=5.0).encode(torch.tensor([[value]]), 5)


def test_latency_window_must_be_whole_steps() -> None:
    with pytest.raises(ValueError, match="window_ms of 2.5 ms is not a whole number of steps"):
        LatencyEncoder(dt=1.0, window_ms=2.5)


def test_latency_restart_replays_presentation() -> None:
    encoder = LatencyEncoder(dt=1.0, window_ms=4.0)
    x = torch.tensor([[0.5]])
    first = [encoder.step(x, t, None).item() for t in range(4)]
    encoder.restart()
    second = [encoder.step(x, t, None).item() for t in range(4, 8)]

    assert first == [0.0, 0.0, 1.0, 0.0]
    assert second == first


def test_encoder_rejects_other_shape() -> None:
    encoder = LatencyEncoder(dt=1.0, window_ms=4.0)
    encoder.step(torch.zeros(2, 3), 0, None)
    with pytest.raises(ValueError, match=r"bound to \(2, 3\)"):
        encoder.step(torch.zeros(2, 4), 1, None)


# Rank order


def test_rank_order_reference_case() -> None:
    encoder = RankOrderEncoder(dt=1.0)
    spikes = encoder.encode(torch.tensor([[0.2, 0.9, 0.0, 0.5]]), 6)[:, 0]

    assert [spike_steps_of(spikes[:, unit]) for unit in range(4)] == [[2], [0], [], [1]]


def test_rank_order_random_permutation() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(4, 5, 6, generator=generator) + 0.01
    spikes = RankOrderEncoder(dt=1.0).encode(x, 30)

    flat = spikes.reshape(30, 4, 30)
    assert torch.equal(flat.sum(0), torch.ones(4, 30))  # one spike per unit
    assert torch.equal(flat.sum(2), torch.ones(30, 4))  # one unit per step
    fire_step = flat.argmax(0)
    expected = torch.argsort(torch.argsort(x.reshape(4, 30), dim=1, descending=True), dim=1)
    assert torch.equal(fire_step, expected)


def test_rank_order_interval_and_ties() -> None:
    x = torch.tensor([[0.5, 0.8, 0.5, 0.1]])

    by_index = RankOrderEncoder(dt=0.5, interval_ms=1.0).spike_steps(x)
    shared = RankOrderEncoder(dt=0.5, interval_ms=1.0, ties="shared").spike_steps(x)

    assert by_index.tolist() == [[2, 0, 4, 6]]
    assert shared.tolist() == [[2, 0, 2, 4]]


def test_rank_descending_dense_ranks() -> None:
    ranks = rank_descending(torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0]]), ties="shared")

    assert ranks.tolist() == [[0, 2, 0, 1, 2]]


def test_rank_order_rejects_negative() -> None:
    with pytest.raises(ValueError, match="at least 0, got a minimum of -1.0"):
        RankOrderEncoder(dt=1.0).encode(torch.tensor([[1.0, -1.0]]), 3)


def test_encoder_follows_dtype_change() -> None:
    encoder = LatencyEncoder(dt=1.0, window_ms=4.0)
    x = torch.tensor([[1.0, 0.5]])
    encoder.step(x, 0, None)
    encoder.to(torch.float64)
    encoder.restart()

    assert encoder.step(x, 0, None).dtype == torch.float64
