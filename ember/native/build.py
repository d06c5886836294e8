"""Compile the native kernels on first use and load them with ctypes.

The system C compiler builds the C sources next to this module into a shared
library once per source version. The library is cached under
``$EMBER_NATIVE_CACHE`` (default ``~/.cache/ember/native``), in a file named by
the hash of the sources, the compiler and the flags. No torch headers are
involved, so a build takes about a second (gcc 12 on a 2-core x86 machine).

Set ``EMBER_NATIVE=0`` to switch the native path off. Without a working
compiler the build fails quietly (a debug log line says why) and Ember keeps
to its PyTorch path.

The flags keep floating point arithmetic as written: no ``-ffast-math``,
which would reorder sums, and ``-ffp-contract=off``, so that ``-march=native``
(the vector instructions of this CPU) fuses no multiply-add. Because the
library uses this CPU's instructions, the cache key includes the CPU's model
and feature flags: a cache directory shared by different machines keeps one
library per kind of CPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("kernels.c", "kernels_step.h")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c99", "-ffp-contract=off", "-fno-fast-math")
#: The flags for a compiler that rejects -march=native.
PORTABLE_FLAGS = tuple(flag for flag in FLAGS if flag != "-march=native")
CPU_INFO = Path("/proc/cpuinfo")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None


def enabled() -> bool:
    """Return whether the native path is allowed: false when ``EMBER_NATIVE`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("EMBER_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Return the directory for compiled libraries: ``$EMBER_NATIVE_CACHE`` or ``~/.cache/ember/native``."""
    configured = os.environ.get("EMBER_NATIVE_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "ember" / "native"


def find_compiler() -> str | None:
    """Return the path of the C compiler: ``$CC``, else the first of ``cc``, ``gcc``, ``clang`` on the PATH."""
    configured = os.environ.get("CC")
    if configured:
        return shutil.which(configured) or (configured if os.path.isfile(configured) else None)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def cpu_identity() -> str:
    """Return what ``-march=native`` depends on: the CPU's model name and feature flags, or the platform's name for it."""
    try:
        lines = CPU_INFO.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    found: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in keys and key not in found:
            found[key] = value.strip()
    return " | ".join(f"{key}={found[key]}" for key in keys if key in found) or platform.machine()


def source_hash(compiler: str) -> str:
    """Return a hash of the sources, the compiler path, the flags, the platform and the CPU."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode())
        digest.update((SOURCE_DIR / name).read_bytes())
    digest.update(compiler.encode())
    digest.update(" ".join(FLAGS).encode())
    digest.update(sys.platform.encode())
    digest.update(cpu_identity().encode())
    return digest.hexdigest()[:20]


def compile_library(compiler: str, target: Path) -> None:
    """Compile the sources into the shared library ``target``, written atomically.

    Raises:
        RuntimeError: if the compiler fails; the message contains its output.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(handle)
    try:
        # A compiler that rejects -march=native gets a second try without it.
        for flags in (FLAGS, PORTABLE_FLAGS):
            command = [compiler, *flags, "-o", temporary, str(SOURCE_DIR / "kernels.c"), "-lm"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode == 0:
                break
            logger.debug("%s failed with exit code %s", " ".join(command), result.returncode)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr.strip()}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load() -> ctypes.CDLL | None:
    """Return the compiled kernels, building them if needed, or ``None`` when the native path is unavailable.

    The result is remembered for the process: a failed build is not retried.
    """
    global _library, _failure
    if not enabled():
        return None
    if _library is not None or _failure is not None:
        return _library
    with _lock:
        if _library is not None or _failure is not None:
            return _library
        try:
            _library = _build_and_open()
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            _failure = str(error)
            logger.debug("native kernels unavailable, using the PyTorch path: %s", error)
    return _library


def failure() -> str | None:
    """Return why the last build or load failed, or ``None``."""
    return _failure


def _build_and_open() -> ctypes.CDLL:
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC or install cc, gcc or clang)")
    name = f"ember_native_{source_hash(compiler)}.so"
    directories = [cache_dir()]
    if not os.environ.get("EMBER_NATIVE_CACHE"):
        # A home directory that cannot be written (containers, services) falls back to the temp directory.
        directories.append(Path(tempfile.gettempdir()) / f"ember-native-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    for directory in directories:
        target = directory / name
        if target.exists():
            return ctypes.CDLL(str(target))
        try:
            logger.debug("compiling native kernels with %s into %s", compiler, target)
            compile_library(compiler, target)
        except OSError as error:
            logger.debug("cannot write the native kernel cache %s: %s", directory, error)
            continue
        return ctypes.CDLL(str(target))
    raise RuntimeError(f"no writable cache directory for the native kernels among {[str(d) for d in directories]}")
