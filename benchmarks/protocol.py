"""The timing protocol shared by every framework's benchmark process.

A framework adapter builds one case and offers ``run(units)``, which simulates
``units`` of work from a fresh sample state and returns the number of output
spikes, and optionally ``prepare(units)``, untimed work before each run.
:func:`measure` then:

1. records the peak resident set size after the imports,
2. builds the model (timed as ``build_s``),
3. runs ``min_units`` once as the warm-up, which also estimates the time per
   unit,
4. shortens a run to fit ``repeats`` runs in ``budget_s`` (never below
   ``min_units``, never above ``units``), probing again with longer runs
   while one-off or per-run costs inflate the estimate
   (:func:`_choose_run_length`),
5. times ``repeats`` runs, or fewer when even runs of ``min_units`` do not
   fit the budget (at least one), and reports their median.

Memory is the peak resident set size of the process that runs the
simulation (:func:`peak_rss_mib`). It includes the interpreter and the
imported libraries, so the report also gives the peak above the value after
the imports.

Each process prints one line ``BENCH-RESULT {json}`` on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol as TypingProtocol

from benchmarks.workloads import DT_MS, Case, seconds_per_unit

RESULT_PREFIX = "BENCH-RESULT "


@dataclass(frozen=True)
class Protocol:
    """Timing settings of one case.

    Args:
        repeats: timed runs after the warm-up; the median is reported.
        budget_s: the wall time, in s, that the timed runs of one case may
            take together; slower frameworks get shorter runs.
        threads: the number of threads each framework may use.
    """

    repeats: int = 5
    budget_s: float = 60.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats!r}")
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be above 0 s, got {self.budget_s!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads!r}")


class Unsupported(Exception):
    """Raised by an adapter when its framework cannot run a case; the message is the reason."""


class Simulation(TypingProtocol):
    """The interface of a framework adapter for one case."""

    def run(self, units: int) -> int:
        """Simulate ``units`` of work from a fresh sample state and return the output spike count."""
        ...


def _vm_hwm_mib() -> float | None:
    """Return VmHWM from /proc/self/status in MiB, or None where there is no such file."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


MEMORY_METHOD = "VmHWM" if _vm_hwm_mib() is not None else "ru_maxrss"


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB.

    On Linux this is VmHWM, the peak of the current address space. Unlike
    ``ru_maxrss``, it does not carry over the parent's peak through fork and
    exec, so a process started by a large parent still reports its own peak.
    Elsewhere it falls back to ``ru_maxrss``.
    """
    found = _vm_hwm_mib()
    if found is not None:
        return found
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def choose_units(case: Case, seconds_per_unit_estimate: float, protocol: Protocol) -> int:
    """Return the units of one timed run so that ``repeats`` runs fit in ``budget_s``.

    The result lies in ``[case.min_units, case.units]``.
    """
    if seconds_per_unit_estimate <= 0:
        return case.units
    fitting = math.floor(protocol.budget_s / (protocol.repeats * seconds_per_unit_estimate))
    return max(case.min_units, min(case.units, fitting))


def result_record(
    case: Case,
    *,
    framework: str,
    variant: str,
    units: int,
    times_s: list[float],
    spikes: list[int],
    build_s: float,
    rss_after_import_mib: float,
    peak_rss_mib: float,
    versions: dict[str, str],
    notes: list[str],
    memory_method: str = MEMORY_METHOD,
) -> dict[str, Any]:
    """Assemble the JSON record of a measured case.

    ``times_s`` are the wall times of the timed runs, each of ``units`` units;
    ``spikes`` are their output spike counts.
    """
    median_s = statistics.median(times_s)
    sample_steps = units * case.steps_per_unit * case.batch
    spikes_per_run = statistics.median(spikes) if spikes else 0.0
    neuron_seconds = sample_steps * case.n * DT_MS / 1000.0
    return {
        "status": "ok",
        "framework": framework,
        "variant": variant,
        "case": case.to_dict(),
        "units": units,
        "steps": units * case.steps_per_unit,
        "wall_s": median_s,
        "wall_s_runs": times_s,
        "sample_steps_per_s": sample_steps / median_s,
        "seconds_per_unit": seconds_per_unit(case, median_s / sample_steps),
        "output_rate_hz": spikes_per_run / neuron_seconds,
        "build_s": build_s,
        "peak_rss_mib": peak_rss_mib,
        "rss_after_import_mib": rss_after_import_mib,
        "memory_method": memory_method,
        "versions": versions,
        "notes": notes,
        "python": platform.python_version(),
    }


def not_measured(case: Case, *, framework: str, variant: str, status: str, reason: str, versions: dict[str, str] | None = None) -> dict[str, Any]:
    """Return the record of a case that was not measured; ``status`` is ``unsupported`` or ``failed``."""
    return {
        "status": status,
        "framework": framework,
        "variant": variant,
        "case": case.to_dict(),
        "reason": reason,
        "versions": versions or {},
        "python": platform.python_version(),
    }


def _timed_run(simulation: Simulation, units: int) -> tuple[float, int]:
    """Run ``units`` units and return ``(wall s, output spikes)``; an optional ``prepare(units)`` runs untimed first."""
    prepare = getattr(simulation, "prepare", None)
    if prepare is not None:
        prepare(units)
    start = time.perf_counter()
    count = simulation.run(units)
    return time.perf_counter() - start, int(count)


def _choose_run_length(simulation: Simulation, case: Case, protocol: Protocol) -> tuple[int, tuple[float, int] | None]:
    """Warm up, then find the units of one timed run; return them and a probe run of that length, if any.

    A fixed cost per run (code generation in the warm-up, set-up work in each
    run) makes a short run look slow per unit. So while the estimate calls
    for shortened runs, a probe of the chosen length measures again, and the
    length grows until the estimate stops growing (at most three probes). A
    probe of the final length counts as a timed run.
    """
    warm_up_s, _ = _timed_run(simulation, case.min_units)
    units = choose_units(case, warm_up_s / case.min_units, protocol)
    probe = None
    for _ in range(3):
        if units >= case.units:
            break
        elapsed, count = _timed_run(simulation, units)
        probe = (units, elapsed, count)
        longer = choose_units(case, elapsed / units, protocol)
        if longer <= units:
            break
        units = longer
    if probe is not None and probe[0] == units:
        return units, (probe[1], probe[2])
    return units, None


def measure(
    build: Callable[[], Simulation],
    case: Case,
    protocol: Protocol,
    *,
    framework: str,
    variant: str,
    versions: dict[str, str],
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Build a case, warm it up, time it and return its record (see the module docstring)."""
    rss_after_import = peak_rss_mib()
    start = time.perf_counter()
    simulation = build()
    build_s = time.perf_counter() - start

    units, probe = _choose_run_length(simulation, case, protocol)
    times, spikes = [], []
    if probe is not None:
        times.append(probe[0])
        spikes.append(probe[1])
    per_run_s = probe[0] if probe is not None else 0.0
    runs = protocol.repeats if per_run_s <= 0 else max(1, min(protocol.repeats, math.floor(protocol.budget_s / per_run_s)))
    while len(times) < runs:
        elapsed, count = _timed_run(simulation, units)
        times.append(elapsed)
        spikes.append(count)

    notes = list(notes or [])
    if units < case.units:
        notes.append(f"runs shortened to {units} of {case.units} {'samples' if case.workload == 'W1' else 'steps'} to fit the time budget")
    if len(times) < protocol.repeats:
        notes.append(f"{len(times)} timed run{'s' if len(times) > 1 else ''} instead of {protocol.repeats} to fit the time budget")
    return result_record(
        case,
        framework=framework,
        variant=variant,
        units=units,
        times_s=times,
        spikes=spikes,
        build_s=build_s,
        rss_after_import_mib=rss_after_import,
        peak_rss_mib=peak_rss_mib(),
        versions=versions,
        notes=notes,
    )


def emit(record: dict[str, Any]) -> None:
    """Print a record as the process's result line."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any] | None:
    """Return the record from a benchmark process's stdout, or None when it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def parse_arguments(argv: list[str] | None, variants: tuple[str, ...]) -> tuple[Case, Protocol, str]:
    """Parse ``--case JSON --protocol JSON [--variant NAME]`` of a benchmark process."""
    parser = argparse.ArgumentParser(description="Run one benchmark case and print its JSON record.")
    parser.add_argument("--case", required=True, help="the case as JSON (benchmarks.workloads.Case fields)")
    parser.add_argument("--protocol", default="{}", help="the protocol as JSON (benchmarks.protocol.Protocol fields)")
    parser.add_argument("--variant", default=variants[0], choices=variants, help="the framework's variant or code target")
    arguments = parser.parse_args(argv)
    return Case.from_dict(json.loads(arguments.case)), Protocol(**json.loads(arguments.protocol)), arguments.variant


def main_for(
    framework: str,
    variants: tuple[str, ...],
    run_case: Callable[[Case, Protocol, str], dict[str, Any]],
    argv: list[str] | None = None,
) -> int:
    """Run one case with ``run_case`` and print its record; failures become ``failed`` records.

    Returns:
        The process exit status: 0 when a record was printed, even a
        ``failed`` or ``unsupported`` one.
    """
    case, protocol, variant = parse_arguments(argv, variants)
    os.environ.setdefault("OMP_NUM_THREADS", str(protocol.threads))
    try:
        record = run_case(case, protocol, variant)
    except Unsupported as reason:
        record = not_measured(case, framework=framework, variant=variant, status="unsupported", reason=str(reason))
    except Exception as error:  # noqa: BLE001 - any failure of a peer becomes a listed reason
        detail = traceback.format_exc(limit=6)
        sys.stderr.write(detail)
        record = not_measured(
            case, framework=framework, variant=variant, status="failed", reason=f"{type(error).__name__}: {error}"
        )
    emit(record)
    return 0

