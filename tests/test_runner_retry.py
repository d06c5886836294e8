"""Low-activity retry (Diehl and Cook 2015): samples that fire too little are shown again with stronger input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ember.results import DirectoryStore
from ember.runner import JobCancelled, _JobRun, run_job
from ember.spec import validate_spec
from tests.test_runner import CancelAfter, comparable, digits_job

#: A rate at which every digit pixel above 0 (intensity at least 1/16) spikes in every 1 ms step.
SATURATING_HZ = 16000.0


def detector_job(max_rate_hz: float, retry: dict | None, eval_batch_size: int = 3) -> dict:
    """An evaluate job without learning: 64 Poisson pixels drive 4 LIF neurons through fixed weights."""
    document = {
        "kind": "evaluate",
        "dt": 1.0,
        "presentation_ms": 10.0,
        "rest_ms": 2.0,
        "eval_batch_size": eval_batch_size,
        "seed": 5,
        "device": "cpu",
        "dtype": "float64",
        "data": {"dataset": "digits", "train_samples": 7, "test_samples": 8},
        "readout": {"type": "max_rate_labels", "population": "det"},
        "record": {"samples": 2, "plots": False, "parameters": False},
        "network": {
            "inputs": {"pixels": {"type": "poisson", "shape": [64], "max_rate_hz": max_rate_hz}},
            "populations": {"det": {"type": "lif", "shape": [4], "tau_mem": 10.0, "refractory_period": 0.0}},
            "connections": {
                "drive": {
                    "type": "dense", "pre": "pixels", "post": "det",
                    "weight": {"type": "uniform", "low": 0.0, "high": 0.4},
                },
            },
        },
    }
    if retry is not None:
        document["low_activity_retry"] = retry
    return document


def run_counts(document: dict, path) -> tuple[dict, dict]:
    """Run a job; return its metrics and its per-sample read-out counts of each phase."""
    run = _JobRun(validate_spec(document), DirectoryStore(path), None, None)
    metrics = run.run()
    return metrics, {key: value.clone() for key, value in run.counts.items()}


def test_last_retry_counts_at_raised_rate(tmp_path):
    # The first presentation (1e-3 Hz) almost surely gives no spike; two retries raise the
    # rate by 8000 Hz each, so the last one runs at 16000.001 Hz, where the input is the
    # same whatever the random draws: a run without retries at that rate gives the same counts.
    retry = {"population": "det", "min_spikes": 10**6, "rate_increase_hz": 8000.0, "max_retries": 2}
    retried, retried_counts = run_counts(detector_job(1e-3, retry), tmp_path / "retried")
    direct, direct_counts = run_counts(detector_job(1e-3 + 2 * 8000.0, None), tmp_path / "direct")
    for key in ("label", "test"):
        assert float(direct_counts[key].sum()) > 0
        assert torch.equal(retried_counts[key], direct_counts[key])
        assert torch.equal(retried_counts[f"{key}.labels"], direct_counts[f"{key}.labels"])
    assert retried["assignments"] == direct["assignments"]
    assert retried["confusion_matrix"] == direct["confusion_matrix"]
    # Steps count each batch presentation once: 3 + 3 batches of up to 3 samples, each shown 3 times.
    assert retried["steps"] == 3 * direct["steps"] == 3 * 6 * 12
    assert retried["low_activity_retry"] == {
        "label": {"retried_samples": 7, "retries": 14, "still_low": 7},
        "test": {"retried_samples": 8, "retries": 16, "still_low": 8},
    }
    assert retried["retried_samples"] == 15
    assert "low_activity_retry" not in direct and "retried_samples" not in direct


def test_only_low_samples_retried(tmp_path):
    # At a saturating rate the input is deterministic, so every presentation of a sample gives
    # the same counts: samples below min_spikes are retried max_retries times and keep them.
    _, counts = run_counts(detector_job(SATURATING_HZ, None), tmp_path / "plain")
    totals = {key: counts[key].sum(dim=1) for key in ("label", "test")}
    min_spikes = int(torch.cat(list(totals.values())).median()) + 1
    low = {key: int((total < min_spikes).sum()) for key, total in totals.items()}
    assert 0 < low["label"] + low["test"] < 15
    retry = {"population": "det", "min_spikes": min_spikes, "rate_increase_hz": 100.0, "max_retries": 3}
    metrics, retried_counts = run_counts(detector_job(SATURATING_HZ, retry), tmp_path / "retried")
    for key in ("label", "test"):
        assert torch.equal(retried_counts[key], counts[key])
        assert metrics["low_activity_retry"][key] == {
            "retried_samples": low[key], "retries": 3 * low[key], "still_low": low[key]
        }
    # Each batch with a low sample is presented 3 more times, as a smaller batch.
    batches_with_low = sum(
        int((total[start : start + 3] < min_spikes).any()) for total in totals.values() for start in range(0, len(total), 3)
    )
    assert batches_with_low > 0
    assert metrics["steps"] == (6 + 3 * batches_with_low) * 12


def test_no_low_samples_unchanged(tmp_path):
    plain, plain_counts = run_counts(detector_job(SATURATING_HZ, None), tmp_path / "plain")
    retry = {"population": "det", "min_spikes": 1, "rate_increase_hz": 100.0, "max_retries": 3}
    assert all(float(counts.sum()) >= 1 for key, value in plain_counts.items() if "." not in key for counts in value)
    retried, retried_counts = run_counts(detector_job(SATURATING_HZ, retry), tmp_path / "retried")
    assert retried.pop("retried_samples") == 0
    assert retried.pop("low_activity_retry") == {key: {"retried_samples": 0, "retries": 0, "still_low": 0} for key in ("label", "test")}
    assert comparable(retried) == comparable(plain)


def test_retry_only_in_chosen_phases(tmp_path):
    retry = {"population": "det", "min_spikes": 10**6, "rate_increase_hz": 8000.0, "max_retries": 2, "phases": ["test"]}
    retried, retried_counts = run_counts(detector_job(1e-3, retry), tmp_path / "retried")
    plain, plain_counts = run_counts(detector_job(1e-3, None), tmp_path / "plain")
    assert torch.equal(retried_counts["label"], plain_counts["label"])
    assert retried["low_activity_retry"] == {"test": {"retried_samples": 8, "retries": 16, "still_low": 8}}
    assert retried["steps"] == plain["steps"] + 2 * 3 * 12


def retry_digits_job() -> dict:
    return digits_job(low_activity_retry={"population": "exc", "min_spikes": 20, "rate_increase_hz": 150.0, "max_retries": 2})


@pytest.fixture(scope="module")
def uninterrupted_retry(tmp_path_factory):
    spec = validate_spec(retry_digits_job())
    path = tmp_path_factory.mktemp("uninterrupted_retry")
    updates = []
    metrics = run_job(spec, DirectoryStore(path), progress=updates.append)
    return spec, path, metrics, updates


def test_retries_in_all_phases(uninterrupted_retry):
    _, _, metrics, updates = uninterrupted_retry
    stats = metrics["low_activity_retry"]
    assert stats["train_0"]["retried_samples"] > 0
    # Retrying helps: some samples reach min_spikes at the raised rate, some need a second retry.
    assert all(stat["still_low"] < stat["retried_samples"] for stat in stats.values())
    assert stats["train_0"]["retries"] > stats["train_0"]["retried_samples"]
    assert sum(stat["retried_samples"] for stat in stats.values()) == metrics["retried_samples"]
    assert all(stat["retried_samples"] <= stat["retries"] <= 2 * stat["retried_samples"] for stat in stats.values())
    retries = sum(stat["retries"] for stat in stats.values())
    extra = metrics["steps"] - (6 + 2 + 2) * 35
    assert extra % 35 == 0 and 0 < extra <= retries * 35
    # Progress counts samples, not presentations.
    assert [update.done for update in updates] == [2, 4, 6, 8, 10, 12, 19, 24, 31, 33]


def test_resume_with_retries_equal(uninterrupted_retry, tmp_path):
    spec, path, metrics, _ = uninterrupted_retry
    with pytest.raises(JobCancelled):
        run_job(spec, DirectoryStore(tmp_path), should_cancel=CancelAfter(4))
    with pytest.raises(JobCancelled):
        run_job(spec, DirectoryStore(tmp_path), should_cancel=CancelAfter(4))
    resumed = run_job(spec, DirectoryStore(tmp_path))
    assert comparable(resumed) == comparable(metrics)
    whole, parts = load_file(path / "parameters.safetensors"), load_file(tmp_path / "parameters.safetensors")
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[key], parts[key]) for key in whole)
