"""Run the benchmarks on Ember and the peers and write BENCHMARKS.md.

Usage::

    python -m benchmarks.run [--quick] [--device cpu|cuda] [--only W1,W2-n1000-b32-stdp,...]

The peers' environments are created first when missing
(:mod:`benchmarks.envs`). Then every case runs once per framework, each in a
fresh process of that framework's python with one thread; the processes
print JSON records (:mod:`benchmarks.protocol`). The run is saved as JSON
under ``$EMBER_BENCH_HOME/results/`` and BENCHMARKS.md is written from it
(:mod:`benchmarks.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import envs, report
from benchmarks.protocol import Protocol, not_measured, parse_result
from benchmarks.service_bench import measure_service_overhead
from benchmarks.workloads import WORKLOADS, Case, full_cases, quick_cases, select_cases

REPOSITORY = Path(__file__).resolve().parent.parent
QUICK_PROTOCOL = Protocol(repeats=3, budget_s=6.0)
# NOTE: the full run's duration depends mostly on the slow peers, which use the whole budget of
# timed runs per case, and on Brian2's compilation; BENCHMARKS.md states the times of the last run.
FULL_PROTOCOL = Protocol(repeats=5, budget_s=20.0)
# A case process that runs longer than this is stopped and listed as failed.
PROCESS_TIMEOUT_S = 900


@dataclass(frozen=True)
class Runner:
    """One framework and variant: how to start its benchmark process."""

    framework: str
    variant: str
    module: str
    environment: str | None  # the peer environment's name, or None for the project's own python

    @property
    def label(self) -> str:
        return report.LABELS.get((self.framework, self.variant), f"{self.framework} {self.variant}")


def runners(device: str) -> list[Runner]:
    """Return every framework and variant of a run, Ember first.

    NOTE: the ``cuda`` path of the PyTorch adapters has not run on a GPU yet.
    """
    # The native engine is CPU-only, so only the CPU run adds a forced PyTorch-engine row.
    engines = [Runner("ember", device, "benchmarks.ember_bench", None)]
    if device == "cpu":
        engines.append(Runner("ember", "cpu/torch", "benchmarks.ember_bench", None))
    return [
        *engines,
        Runner("inferno", device, "benchmarks.peers.inferno_bench", "inferno"),
        Runner("bindsnet", device, "benchmarks.peers.bindsnet_bench", "bindsnet"),
        Runner("brian2", "cpp_standalone", "benchmarks.peers.brian2_bench", "brian2"),
        Runner("brian2", "cython", "benchmarks.peers.brian2_bench", "brian2"),
        Runner("brian2", "numpy", "benchmarks.peers.brian2_bench", "brian2"),
    ]


def model_differences() -> dict[str, list[str]]:
    """Collect each peer's list of model differences from its adapter module."""
    from benchmarks.peers import bindsnet_bench, brian2_bench, inferno_bench

    return {
        "Inferno": inferno_bench.MODEL_DIFFERENCES,
        "BindsNET": bindsnet_bench.MODEL_DIFFERENCES,
        "Brian2": brian2_bench.MODEL_DIFFERENCES,
    }


def measure_bandwidth(megabytes: int = 256, repeats: int = 7) -> dict[str, Any]:
    """Measure memory bandwidth with a single-threaded numpy copy of a float32 array.

    Each copy reads and writes ``megabytes`` MiB; the bandwidth counts both
    (2 x size per copy) and takes the median of ``repeats`` copies after one
    warm-up copy.
    """
    count = megabytes * 1024 * 1024 // 4
    source = np.ones(count, dtype=np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "bytes_per_s": 2 * source.nbytes / seconds,
        "method": f"numpy copy of a {megabytes} MiB float32 array, 1 thread, read plus write counted, median of {repeats}",
    }


def machine() -> dict[str, Any]:
    """Describe this machine: CPU model, cores, memory and OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "os": f"{platform.system()} {platform.release()}"}


def process_environment(protocol: Protocol) -> dict[str, str]:
    """Return the environment of a case process: one thread for OpenMP, MKL and OpenBLAS."""
    environment = dict(os.environ)
    threads = str(protocol.threads)
    environment.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    environment["PYTHONPATH"] = str(REPOSITORY)
    return environment


def run_one(runner: Runner, python: str, case: Case, protocol: Protocol) -> dict[str, Any]:
    """Run one case in a fresh process of ``python``; a crash or timeout becomes a ``failed`` record."""
    command = [
        python, "-m", runner.module,
        "--case", json.dumps(case.to_dict()),
        "--protocol", json.dumps(asdict(protocol)),
        "--variant", runner.variant,
    ]
    try:
        done = subprocess.run(
            command, cwd=REPOSITORY, env=process_environment(protocol), capture_output=True, text=True,
            timeout=PROCESS_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        return not_measured(case, framework=runner.framework, variant=runner.variant, status="failed",
                            reason=f"timed out after {PROCESS_TIMEOUT_S} s")
    record = parse_result(done.stdout)
    if record is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return not_measured(case, framework=runner.framework, variant=runner.variant, status="failed",
                            reason=f"exit status {done.returncode}: {' / '.join(tail)}")
    return record


def prepare_environments(selected: list[Runner]) -> tuple[dict[str, str], dict[str, Any]]:
    """Create the peers' environments; return the python of each usable one and the setup notes or errors."""
    pythons: dict[str, str] = {}
    details: dict[str, Any] = {}
    for name in sorted({runner.environment for runner in selected if runner.environment}):
        try:
            pythons[name] = str(envs.ensure(name))
            details[name] = {"python": pythons[name], "notes": envs.environment_notes(name)}
        except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
            details[name] = {"error": f"setting up its environment failed: {error}"}
            print(f"{name}: environment setup failed: {error}", file=sys.stderr)
    return pythons, details


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark Ember against Inferno, BindsNET and Brian2.")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes and shorter runs (a few minutes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the PyTorch frameworks run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated workloads ({','.join(WORKLOADS)}) or case keys (W2-n1000-b32-stdp) to run"
    )
    parser.add_argument("--frameworks", default="", help="comma-separated frameworks to run (ember,inferno,bindsnet,brian2); default all")
    parser.add_argument("--output", type=Path, default=REPOSITORY / "BENCHMARKS.md", help="the report to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    only = [name.strip() for name in arguments.only.split(",") if name.strip()]
    try:
        cases = select_cases(quick_cases() if arguments.quick else full_cases(), only)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    base = QUICK_PROTOCOL if arguments.quick else FULL_PROTOCOL
    protocol = base
    chosen = {name.strip() for name in arguments.frameworks.split(",") if name.strip()}
    selected = [runner for runner in runners(arguments.device) if not chosen or runner.framework in chosen]

    started = datetime.now(timezone.utc)
    load_at_start = os.getloadavg()[0]
    pythons, env_details = prepare_environments(selected)
    bandwidth = measure_bandwidth()
    print(f"memory bandwidth: {bandwidth['bytes_per_s'] / 1e9:.2f} GB/s", file=sys.stderr)

    results = []
    for case in cases:
        for runner in selected:
            python = sys.executable if runner.environment is None else pythons.get(runner.environment)
            if python is None:
                continue
            start = time.perf_counter()
            record = run_one(runner, python, case, protocol)
            results.append(record)
            outcome = f"{record['seconds_per_unit']:.4g}" if record["status"] == "ok" else record["status"]
            print(f"{case.title:<24} {runner.label:<24} {outcome:<12} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)

    service = measure_service_overhead(protocol, quick=arguments.quick) if not only or "S1" in only else None
    run = {
        "meta": {
            "mode": "quick" if arguments.quick else "full",
            "command": "python -m benchmarks.run" + (" --quick" if arguments.quick else "")
            + (f" --device {arguments.device}" if arguments.device != "cpu" else "")
            + (f" --only {','.join(only)}" if only else ""),
            "started": started.strftime("%Y-%m-%d %H:%M UTC"),
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "protocol": asdict(protocol),
            "device": arguments.device,
            "machine": machine(),
            "load": {"start": load_at_start, "end": os.getloadavg()[0]},
            "bandwidth": bandwidth,
        },
        "envs": env_details,
        "results": results,
        "service": service,
        "differences": model_differences(),
    }
    saved = envs.home() / "results" / f"run-{started.strftime('%Y%m%dT%H%M%S')}.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(run, indent=1), encoding="utf-8")
    arguments.output.write_text(report.write_report(run), encoding="utf-8")
    print(f"wrote {arguments.output} (records in {saved})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
