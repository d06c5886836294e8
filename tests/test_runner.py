"""run_job: phases, progress, cancellation, checkpoints and resuming bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ember.builder import BuildError
from ember.results import DirectoryStore
from ember.runner import CheckpointMismatch, JobCancelled, run_job
from ember.spec import validate_spec


def digits_job(**overrides) -> dict:
    """A small train_evaluate job on the 8x8 digits: 64 Poisson inputs, 12 adaptive neurons, STDP."""
    document = {
        "kind": "train_evaluate",
        "dt": 1.0,
        "presentation_ms": 30.0,
        "rest_ms": 5.0,
        "batch_size": 2,
        "eval_batch_size": 7,
        "seed": 3,
        "device": "cpu",
        "data": {"dataset": "digits", "train_samples": 12, "test_samples": 9},
        "readout": {"type": "max_rate_labels", "population": "exc", "curve_every": 4},
        "record": {"samples": 3, "plots": True},
        "network": {
            "inputs": {"pixels": {"type": "poisson", "shape": [64], "max_rate_hz": 200.0}},
            "populations": {
                "exc": {
                    "type": "adaptive_lif", "shape": [12], "tau_mem": 20.0, "v_rest": -65.0, "v_reset": -65.0,
                    "v_threshold": -60.0, "refractory_period": 2.0, "theta_plus": 0.5,
                },
                "inh": {"type": "lif", "shape": [12], "tau_mem": 5.0, "v_threshold": -60.0},
            },
            "connections": {
                "input": {
                    "type": "dense", "pre": "pixels", "post": "exc",
                    "weight": {"type": "uniform", "low": 0.0, "high": 1.0},
                    "delay": {"init": {"type": "uniform", "low": 0.0, "high": 3.0}},
                    "w_min": 0.0, "w_max": 2.0,
                    "learning": [
                        {"type": "stdp", "a_plus": 0.05, "a_minus": 0.02},
                        {"type": "weight_normalization", "target_sum": 20.0},
                    ],
                },
                "excite": {"type": "one_to_one", "pre": "exc", "post": "inh", "weight": 10.0},
                "inhibit": {
                    "type": "dense", "pre": "inh", "post": "exc", "exclude_matching": True, "weight": -3.0,
                    "delay": {"init": 1.0, "min_ms": 1.0},
                },
            },
            "monitors": {
                "raster": {"type": "spikes", "target": "exc"},
                "voltage": {"type": "state", "target": "exc", "variable": "v", "every": 5, "capacity": 4},
            },
        },
    }
    document.update(overrides)
    return document


def comparable(metrics: dict) -> dict:
    """Metrics without the run section (device and timings differ between runs)."""
    return {key: value for key, value in metrics.items() if key != "run"}


class CancelAfter:
    """A should_cancel callback that asks to stop after ``calls`` checks."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.seen = 0

    def __call__(self) -> bool:
        self.seen += 1
        return self.seen >= self.calls


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    spec = validate_spec(digits_job())
    path = tmp_path_factory.mktemp("uninterrupted")
    updates = []
    metrics = run_job(spec, DirectoryStore(path), progress=updates.append)
    return spec, path, metrics, updates


def test_phases_and_metrics(uninterrupted):
    _, path, metrics, _ = uninterrupted
    assert metrics["samples"] == {"train_0": 12, "label": 12, "test": 9}
    assert metrics["steps"] == (6 + 2 + 2) * 35
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) + metrics["unclassified"] == 9
    assert len(metrics["assignments"]) == 12
    assert metrics["accuracy_curve"]["samples"] == [8, 12]
    assert set(metrics["firing_rate_hz"]["train_0"]) == {"exc", "inh", "pixels"}
    assert json.loads((path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))


def test_input_rate_matches_encoding(uninterrupted):
    _, _, metrics, _ = uninterrupted
    # Digits are 0..16 scaled to [0, 1] at 200 Hz; the mean digit pixel is about 4.9 of 16,
    # and the rest period (5 of 35 ms) is silent.
    rate = metrics["firing_rate_hz"]["test"]["pixels"]
    assert 40.0 < rate < 60.0


def test_progress_reports(uninterrupted):
    _, _, _, updates = uninterrupted
    done = [update.done for update in updates]
    assert done == [2, 4, 6, 8, 10, 12, 19, 24, 31, 33]
    assert {update.total for update in updates} == {33}
    assert [update.phase for update in updates][:6] == ["train"] * 6
    assert updates[-1].phase == "test"
    assert updates[0].epoch == 0 and updates[-1].epoch is None
    assert updates[-1].eta_s == 0.0
    # The first batch pays one-off costs, so the estimate starts with the second.
    assert updates[0].eta_s is None
    assert all(update.eta_s is not None and update.eta_s >= 0.0 for update in updates[1:])


def test_result_layout(uninterrupted):
    _, path, _, _ = uninterrupted
    parameters = load_file(path / "parameters.safetensors")
    assert parameters["input.weight"].shape == (64, 12)
    assert parameters["input.delay"].shape == (64, 12)
    assert parameters["inhibit.weight"].shape == (12 * 11,)
    assert parameters["exc.threshold"].shape == (12,)
    # Thresholds adapted during training: above the base of -60 mV.
    assert float(parameters["exc.threshold"].min()) >= -60.0
    assert float(parameters["exc.threshold"].max()) > -60.0
    assert torch.all(parameters["input.weight"] >= 0.0) and torch.all(parameters["input.weight"] <= 2.0)
    with np.load(path / "artifacts" / "voltage.npz", allow_pickle=False) as data:
        # The last batch contains the last 2 test samples; 35 steps every 5 give 7 records, 4 kept.
        assert data["values"].shape == (4, 2, 12)
        assert data["step"].tolist() == [15, 20, 25, 30]
    plots = {file.stem for file in (path / "plots").glob("*.png")}
    assert {"raster_raster", "weights_input", "delays_input", "confusion_matrix", "accuracy"} <= plots


def test_spike_records_cover_first_samples_of_each_phase(uninterrupted):
    _, path, _, _ = uninterrupted
    with np.load(path / "spikes" / "raster.npz", allow_pickle=False) as data:
        samples = set(data["sample"].tolist())
        steps = data["step"]
        assert data["index"].max() < 12
        assert float(data["dt"]) == 1.0
        assert data["shape"].tolist() == [12]
    # Samples are numbered over the job: train 0-11, label 12-23, test 24-32; 3 recorded per phase.
    assert samples <= {0, 1, 2, 12, 13, 14, 24, 25, 26}
    assert samples & {24, 25, 26}
    assert steps.min() >= 0 and steps.max() < 35


def test_resume_equals_uninterrupted(uninterrupted, tmp_path):
    spec, path, metrics, _ = uninterrupted
    cancel = CancelAfter(4)
    with pytest.raises(JobCancelled) as caught:
        run_job(spec, DirectoryStore(tmp_path), should_cancel=cancel)
    assert caught.value.done == 8
    assert caught.value.total == 33
    assert (tmp_path / "checkpoint.json").exists()
    assert not (tmp_path / "metrics.json").exists()

    # Interrupt again inside the labelling phase, then finish.
    with pytest.raises(JobCancelled) as caught:
        run_job(spec, DirectoryStore(tmp_path), should_cancel=CancelAfter(3))
    assert caught.value.done == 19
    resumed = run_job(spec, DirectoryStore(tmp_path))

    assert comparable(resumed) == comparable(metrics)
    expected = load_file(path / "parameters.safetensors")
    actual = load_file(tmp_path / "parameters.safetensors")
    assert set(actual) == set(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    uninterrupted_spikes = DirectoryStore(path).read_spikes("raster")
    resumed_spikes = DirectoryStore(tmp_path).read_spikes("raster")
    assert np.array_equal(resumed_spikes.sample, uninterrupted_spikes.sample)
    assert np.array_equal(resumed_spikes.step, uninterrupted_spikes.step)
    assert np.array_equal(resumed_spikes.index, uninterrupted_spikes.index)


def test_checkpoint_interval(tmp_path):
    spec = validate_spec(digits_job(checkpoint_every=4, kind="train", readout=None))

    class CountingStore(DirectoryStore):
        def save_checkpoint(self, tensors, meta):
            saved.append((meta["phase"], meta["offset"], meta["finished"]))
            super().save_checkpoint(tensors, meta)

    saved: list = []
    run_job(spec, CountingStore(tmp_path))
    # After samples 4 and 8 (12 is the end), then the final one.
    assert saved == [(0, 4, False), (0, 8, False), (1, 0, True)]


def test_finished_job_returns_stored_metrics(uninterrupted):
    spec, path, metrics, _ = uninterrupted
    updates = []
    again = run_job(spec, DirectoryStore(path), progress=updates.append)
    assert again == json.loads(json.dumps(metrics))
    assert updates == []


def test_checkpoint_of_other_spec_rejected(uninterrupted):
    _, path, _, _ = uninterrupted
    other = validate_spec(digits_job(seed=4))
    with pytest.raises(CheckpointMismatch, match="different job spec"):
        run_job(other, DirectoryStore(path))


def test_simulation_spike_times_exact(tmp_path):
    """One input spike at 2 ms drives a LIF neuron over threshold in the same step (no delay)."""
    spec = validate_spec(
        {
            "kind": "simulate",
            "duration_ms": 10.0,
            "dt": 1.0,
            "network": {
                "inputs": {"source": {"type": "spike_times", "shape": [1], "times_ms": [2.0, 6.0], "indices": [0, 0]}},
                "populations": {"cell": {"type": "lif", "shape": [1], "v_rest": 0.0, "v_reset": 0.0, "v_threshold": 1.0}},
                "connections": {
                    "link": {"type": "one_to_one", "pre": "source", "post": "cell", "weight": 2.0},
                    "late": {"type": "one_to_one", "pre": "source", "post": "cell", "weight": 0.0, "delay": {"init": 3.0}},
                },
                "monitors": {"cell_spikes": {"type": "spikes", "target": "cell"}},
            },
        }
    )
    metrics = run_job(spec, DirectoryStore(tmp_path))
    records = DirectoryStore(tmp_path).read_spikes("cell_spikes")
    assert records.step.tolist() == [2, 6]
    assert records.sample is None
    assert metrics["steps"] == 10
    assert metrics["firing_rate_hz"]["simulate"]["cell"] == pytest.approx(2 / 0.010)


def test_simulation_cancel_and_resume(tmp_path):
    document = {
        "kind": "simulate",
        "duration_ms": 2500.0,
        "dt": 1.0,
        "seed": 9,
        "network": {
            "inputs": {"noise": {"type": "background", "shape": [20], "rate_hz": 40.0}},
            "populations": {"cells": {"type": "lif", "shape": [4], "tau_mem": 10.0}},
            "connections": {"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 6.0}},
            "monitors": {"raster": {"type": "spikes", "target": "cells"}},
        },
    }
    spec = validate_spec(document)
    whole = run_job(spec, DirectoryStore(tmp_path / "whole"))
    with pytest.raises(JobCancelled) as caught:
        run_job(spec, DirectoryStore(tmp_path / "parts"), should_cancel=CancelAfter(1))
    assert caught.value.done == 1000
    resumed = run_job(spec, DirectoryStore(tmp_path / "parts"))
    assert comparable(resumed) == comparable(whole)
    assert resumed["firing_rate_hz"]["simulate"]["noise"] == pytest.approx(40.0, rel=0.05)
    first = DirectoryStore(tmp_path / "whole").read_spikes("raster")
    second = DirectoryStore(tmp_path / "parts").read_spikes("raster")
    assert np.array_equal(first.step, second.step) and np.array_equal(first.index, second.index)
    assert len(first) > 100


def test_evaluate_from_initial_parameters(uninterrupted, tmp_path):
    _, path, _, _ = uninterrupted
    document = digits_job(kind="evaluate", initial_parameters=str(path / "parameters.safetensors"))
    metrics = run_job(validate_spec(document), DirectoryStore(tmp_path))
    assert metrics["samples"] == {"label": 12, "test": 9}
    # Learning is off, so the stored parameters are the loaded ones.
    loaded = load_file(path / "parameters.safetensors")
    stored = load_file(tmp_path / "parameters.safetensors")
    for name in loaded:
        assert torch.equal(stored[name], loaded[name]), name


def test_unreadable_initial_parameters(tmp_path):
    document = digits_job(kind="evaluate", initial_parameters=str(tmp_path / "absent.safetensors"))
    with pytest.raises(BuildError, match="initial_parameters"):
        run_job(validate_spec(document), DirectoryStore(tmp_path / "out"))


def test_data_of_wrong_size_rejected(tmp_path):
    document = digits_job()
    document["network"]["inputs"]["pixels"]["shape"] = [784]
    with pytest.raises(BuildError, match=r"784 units .* shape \[8, 8\]"):
        run_job(validate_spec(document), DirectoryStore(tmp_path))


def test_cuda_requested_without_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BuildError, match="no CUDA device"):
        run_job(validate_spec(digits_job(device="cuda")), DirectoryStore(tmp_path))


@pytest.mark.gpu
def test_resume_on_cuda(tmp_path):
    spec = validate_spec(digits_job(device="cuda"))
    whole = run_job(spec, DirectoryStore(tmp_path / "whole"))
    assert whole["run"]["device"].startswith("cuda")
    with pytest.raises(JobCancelled):
        run_job(spec, DirectoryStore(tmp_path / "parts"), should_cancel=CancelAfter(3))
    resumed = run_job(spec, DirectoryStore(tmp_path / "parts"))
    assert comparable(resumed) == comparable(whole)
    expected = load_file(tmp_path / "whole" / "parameters.safetensors")
    actual = load_file(tmp_path / "parts" / "parameters.safetensors")
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_raster_lays_recorded_samples_end_to_end():
    from ember.results import SpikeChunk
    from ember.runner import _raster_chunk

    chunk = SpikeChunk(
        step=np.array([1, 2, 3, 4], dtype=np.int64),
        index=np.array([0, 1, 0, 1], dtype=np.int64),
        sample=np.array([3, 3, 80, 81], dtype=np.int64),
        dt=1.0,
        shape=(2,),
    )
    laid = _raster_chunk(chunk, 500)
    assert laid.step.tolist() == [1, 2, 503, 1004]
    assert laid.index.tolist() == [0, 1, 0, 1]
