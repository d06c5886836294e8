"""DirectoryStore: the result layout, round trips, spike merging and checkpoints."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ember.results import DirectoryStore, ResultStore, SpikeChunk

PNG = b"\x89PNG\r\n\x1a\n" + b"rest-of-image"


def chunk(steps, indices, samples=None, shape=(4,)) -> SpikeChunk:
    return SpikeChunk(step=np.array(steps), index=np.array(indices), sample=None if samples is None else np.array(samples), dt=0.5, shape=shape)


def test_directory_store_is_a_result_store(tmp_path):
    assert isinstance(DirectoryStore(tmp_path), ResultStore)


def test_metrics_round_trip_with_non_finite(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put_metrics({"accuracy": 0.75, "loss": float("nan"), "counts": torch.tensor([1, 2]), "rate": np.float32(2.5)})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "accuracy": 0.75,
        "counts": [1, 2],
        "loss": None,
        "rate": 2.5,
    }


def test_parameters_round_trip(tmp_path):
    store = DirectoryStore(tmp_path)
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    delay = torch.full((2, 3), 1.5)
    view = torch.arange(10.0)[::2]  # not contiguous
    store.put_parameters({"x_exc.weight": weight, "x_exc.delay": delay, "exc.threshold": view})
    loaded = load_file(tmp_path / "parameters.safetensors")
    assert set(loaded) == {"x_exc.weight", "x_exc.delay", "exc.threshold"}
    assert torch.equal(loaded["x_exc.weight"], weight)
    assert torch.equal(loaded["x_exc.delay"], delay)
    assert torch.equal(loaded["exc.threshold"], view)


def test_spikes_npz_without_pickle(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put_spikes("raster", chunk([3, 1], [2, 0], [0, 0]))
    path = tmp_path / "spikes" / "raster.npz"
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"step", "index", "sample", "dt", "shape"}
        assert data["step"].dtype == np.int64
        assert data["index"].dtype == np.int64
        assert data["sample"].dtype == np.int64
        assert data["step"].tolist() == [1, 3]
        assert data["index"].tolist() == [0, 2]
        assert float(data["dt"]) == 0.5
        assert data["shape"].tolist() == [4]
    with zipfile.ZipFile(path) as archive:
        assert all(not name.endswith(".pkl") for name in archive.namelist())


def test_spike_chunks_merge_sorted_and_deduplicated(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put_spikes("raster", chunk([5, 2], [1, 3], [1, 0]))
    store.put_spikes("raster", chunk([0, 5], [0, 1], [2, 1]))  # (1, 5, 1) is a repeat
    fresh = DirectoryStore(tmp_path)  # no cache: reads the file
    fresh.put_spikes("raster", chunk([2], [3], [0]))  # a repeat again
    merged = DirectoryStore(tmp_path).read_spikes("raster")
    assert merged.sample.tolist() == [0, 1, 2]
    assert merged.step.tolist() == [2, 5, 0]
    assert merged.index.tolist() == [3, 1, 0]


def test_spikes_without_samples(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put_spikes("cells", chunk([4, 1, 4], [0, 2, 0], shape=(2, 2)))
    merged = store.read_spikes("cells")
    assert merged.sample is None
    assert merged.step.tolist() == [1, 4]
    assert merged.shape == (2, 2)
    with np.load(tmp_path / "spikes" / "cells.npz", allow_pickle=False) as data:
        assert "sample" not in data.files


def test_spike_chunk_rejects_bad_records():
    with pytest.raises(ValueError, match="one length"):
        chunk([1, 2], [0])
    with pytest.raises(ValueError, match=r"index must lie in \[0, 4\)"):
        chunk([1], [4])


def test_plots_and_artifacts(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put_plot("raster_exc", PNG)
    store.put_artifact("spec.json", b"{}")
    assert (tmp_path / "plots" / "raster_exc.png").read_bytes() == PNG
    assert (tmp_path / "artifacts" / "spec.json").read_bytes() == b"{}"
    assert store.list_plots() == ["raster_exc"]
    with pytest.raises(ValueError, match="not PNG data"):
        store.put_plot("bad", b"GIF89a")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden"])
def test_unsafe_names_rejected(tmp_path, name):
    store = DirectoryStore(tmp_path)
    with pytest.raises(ValueError, match="invalid"):
        store.put_artifact(name, b"x")


def test_checkpoint_round_trip(tmp_path):
    store = DirectoryStore(tmp_path)
    assert store.load_checkpoint() is None
    tensors = {"network/exc.v": torch.tensor([[1.0, -2.0]]), "counts/test": torch.zeros(2, 3)}
    store.save_checkpoint(tensors, {"phase": 1, "offset": 7})
    loaded, meta = DirectoryStore(tmp_path).load_checkpoint()
    assert meta == {"phase": 1, "offset": 7}
    assert torch.equal(loaded["network/exc.v"], tensors["network/exc.v"])
    assert torch.equal(loaded["counts/test"], tensors["counts/test"])
    store.discard_checkpoint()
    assert store.load_checkpoint() is None


def test_mismatched_checkpoint_detected(tmp_path):
    store = DirectoryStore(tmp_path)
    store.save_checkpoint({"a": torch.ones(1)}, {"phase": 0})
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    store.save_checkpoint({"a": torch.zeros(1)}, {"phase": 1})
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="inconsistent"):
        store.load_checkpoint()


def test_store_path_must_be_a_directory(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        DirectoryStore(file)
