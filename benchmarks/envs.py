"""Virtual environments of the peers, created on demand outside the repository.

Each peer gets its own environment under ``$EMBER_BENCH_HOME/venvs/NAME``
(default ``~/.cache/ember-bench``), installed from PyPI with pip:

* ``inferno``: ``torch==2.13.0`` and ``inferno-ai==0.0.5``, as they are.
* ``bindsnet``: ``torch==2.13.0``, then ``bindsnet==0.3.4`` with ``--no-deps``
  (its metadata requires torch >= 2.14 and torchvision, but it runs on torch
  2.13), then the dependencies from its metadata that ``import bindsnet``
  loads: numpy, scipy, matplotlib, pandas, scikit-learn, tensorboardX and
  tqdm. torchvision, OpenCV, Gymnasium and ALE, which it imports at start-up
  for data sets and games, are replaced by import stubs
  (:mod:`benchmarks.peers.import_stubs`, installed as ``sitecustomize``).
  scikit-image is left out: nothing that ``import bindsnet`` loads imports it.
* ``brian2``: ``brian2==2.11.0`` with Cython on Python 3.13 when such an
  interpreter is found (Brian2 2.11 needs it); otherwise the newest Brian2
  that pip offers for the running Python, with its version in the report.

An environment is reused while its recorded specification matches; pass
``--force`` to rebuild. ``python -m benchmarks.envs`` creates them all.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

STUBS = Path(__file__).with_name("peers") / "import_stubs.py"
MARKER = "ember-bench-env.json"


@dataclass(frozen=True)
class EnvSpec:
    """How to build one peer's environment.

    Args:
        name: the peer's name, also the folder name.
        python: the interpreter versions to try, in order of preference, as
            ``"3.13"``; ``""`` means the interpreter running this module.
        installs: pip install commands, each a list of arguments after
            ``pip install``, run in order.
        import_check: a statement that must run in the environment once it is built.
        stubs: whether to install :mod:`benchmarks.peers.import_stubs` as ``sitecustomize``.
    """

    name: str
    python: tuple[str, ...]
    installs: tuple[tuple[str, ...], ...]
    import_check: str
    stubs: bool = False
    notes: tuple[str, ...] = field(default=())

    def digest(self, interpreter_version: str) -> str:
        text = json.dumps([self.name, interpreter_version, self.installs, self.import_check, self.stubs])
        if self.stubs:
            text += STUBS.read_text(encoding="utf-8")
        return hashlib.sha256(text.encode()).hexdigest()[:16]


BINDSNET_LIGHT_DEPENDENCIES = (
    "numpy>=2,<3",
    "scipy>=1,<2",
    "matplotlib>=3,<4",
    "pandas>=3,<4",
    "scikit-learn>=1,<2",
    "tensorboardX>=2.6.4,<3",
    "tqdm>=4,<5",
)

SPECS: dict[str, EnvSpec] = {
    "inferno": EnvSpec(
        name="inferno",
        python=("3.11", ""),
        installs=(("torch==2.13.0", "inferno-ai==0.0.5"),),
        import_check="import inferno.neural, torch",
    ),
    "bindsnet": EnvSpec(
        name="bindsnet",
        python=("3.11", ""),
        installs=(("torch==2.13.0",), ("--no-deps", "bindsnet==0.3.4"), BINDSNET_LIGHT_DEPENDENCIES),
        import_check="import bindsnet.network, bindsnet.learning, torch",
        stubs=True,
        notes=(
            "bindsnet 0.3.4 installed with --no-deps on torch 2.13.0; torchvision, OpenCV, Gymnasium and ALE "
            "are import stubs (sitecustomize), scikit-image is not installed",
        ),
    ),
    "brian2": EnvSpec(
        name="brian2",
        python=("3.13",),
        installs=(("brian2==2.11.0", "cython", "setuptools"),),
        import_check="import brian2, Cython",
    ),
}

# Used when no Python 3.13 is found: Brian2 2.11 needs it, older releases run on 3.11.
BRIAN2_FALLBACK = EnvSpec(
    name="brian2",
    python=("",),
    installs=(("brian2", "cython", "setuptools"),),
    import_check="import brian2, Cython",
    notes=("no Python 3.13 found, so Brian2 is the newest release pip offers for this Python",),
)


def home() -> Path:
    """Return the folder that contains the peer environments (``$EMBER_BENCH_HOME`` or ``~/.cache/ember-bench``)."""
    return Path(os.environ.get("EMBER_BENCH_HOME", Path.home() / ".cache" / "ember-bench")).expanduser()


def venv_dir(name: str) -> Path:
    return home() / "venvs" / name


def venv_python(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def _version_of(interpreter: str) -> str | None:
    """Return ``"X.Y.Z"`` of a Python interpreter, or None when it does not run."""
    try:
        done = subprocess.run(
            [interpreter, "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(version: str) -> tuple[str, str] | None:
    """Find an interpreter of ``version`` (``"3.13"``; ``""`` for this one): ``(path, full version)`` or None.

    Looks at pyenv's versions (``$PYENV_ROOT`` or ``~/.pyenv``), then at
    ``pythonX.Y`` on ``PATH``.
    """
    if not version:
        return sys.executable, ".".join(map(str, sys.version_info[:3]))
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(str(pyenv / "versions" / f"{version}.*" / "bin" / f"python{version}")), reverse=True)
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        found = _version_of(candidate)
        if found and found.startswith(version + "."):
            return candidate, found
    return None


def resolve_spec(name: str) -> tuple[EnvSpec, str, str]:
    """Return ``(spec, interpreter path, interpreter version)`` for a peer.

    Raises:
        ValueError: for an unknown peer name.
        RuntimeError: when no interpreter of the versions the peer needs is found.
    """
    if name not in SPECS:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(SPECS)}")
    spec = SPECS[name]
    for version in spec.python:
        found = find_python(version)
        if found:
            return spec, found[0], found[1]
    if name == "brian2":
        interpreter, version = find_python("")  # type: ignore[misc]
        return BRIAN2_FALLBACK, interpreter, version
    raise RuntimeError(f"no Python {' or '.join(spec.python)} interpreter found for {name}; install one with pyenv")


def _run(command: list[str]) -> None:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def read_marker(name: str) -> dict | None:
    """Return the recorded specification of an environment, or None when it was never completed."""
    path = venv_dir(name) / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def ensure(name: str, *, force: bool = False) -> Path:
    """Create or update the environment of peer ``name`` and return its python.

    The environment is rebuilt from scratch when ``force`` is set or when its
    recorded specification differs from the current one.

    Raises:
        subprocess.CalledProcessError: when venv, pip or the import check fails.
    """
    spec, interpreter, version = resolve_spec(name)
    digest = spec.digest(version)
    marker = read_marker(name)
    if not force and marker is not None and marker.get("digest") == digest and venv_python(name).exists():
        return venv_python(name)

    target = venv_dir(name)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _run([interpreter, "-m", "venv", str(target)])
    python = str(venv_python(name))
    for arguments in spec.installs:
        _run([python, "-m", "pip", "install", "--quiet", *arguments])
    if spec.stubs:
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        shutil.copyfile(STUBS, Path(purelib) / "sitecustomize.py")
    _run([python, "-c", spec.import_check])
    record = {"digest": digest, "python": version, "installs": spec.installs, "notes": spec.notes}
    (target / MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return venv_python(name)


def environment_notes(name: str) -> list[str]:
    """Return the install notes recorded for a built environment (how it departs from a plain install)."""
    marker = read_marker(name)
    return [] if marker is None else list(marker.get("notes", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the peers' virtual environments for the benchmarks.")
    parser.add_argument("peers", nargs="*", default=list(SPECS), help=f"peers to set up (default: all of {', '.join(SPECS)})")
    parser.add_argument("--force", action="store_true", help="rebuild even when the environment is up to date")
    arguments = parser.parse_args(argv)
    for name in arguments.peers:
        python = ensure(name, force=arguments.force)
        print(f"{name}: {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
