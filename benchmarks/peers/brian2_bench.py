"""Brian2 side of the benchmarks, with the numpy, cython and C++ standalone code targets.

Brian2 simulates one network, without a batch dimension, so it runs the
batch-1 cases only. Every variant builds the same network:

* inputs: a ``PoissonGroup`` (one Bernoulli draw per step); W1 reads the
  sample's rates from a ``TimedArray`` with one row per sample.
* neurons: ``dv/dt = (v_rest - v) / tau`` with ``(unless refractory)``, exact
  integration, threshold ``v >= v_threshold`` (plus ``theta`` for W1).
* synapses: ``v_post += w`` on a presynaptic spike, skipped while the target
  is refractory; pair STDP with event-driven traces set to 1 on a spike.
* W1 resets the membrane potential and the traces at every sample start with
  ``run_regularly``.

Runtime targets (numpy, cython) build once and restore the initial state
before each timed run. The C++ standalone target compiles one binary for a
run of ``case.units`` and executes it once per timed run. The time is what
the binary reports for its run loop. The memory is the binary's own peak
resident set size (VmHWM), which code inserted at the end of its ``main``
writes to a file.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

from benchmarks import workloads
from benchmarks.protocol import (
    Case,
    Protocol,
    Unsupported,
    main_for,
    measure,
    result_record,
)
from benchmarks.workloads import DT_MS, FORWARD, W1

FRAMEWORK = "brian2"
VARIANTS = ("cpp_standalone", "cython", "numpy")

MODEL_DIFFERENCES = [
    "No batch dimension: only batch-1 cases run.",
    "Brian2's default schedule applies synaptic effects after the threshold test, so an input spike "
    "changes the membrane potential at its arrival step but can trigger a spike one step later than in "
    "Ember. Under saturating synaptic drive the shortest inter-spike interval is therefore r + 1 steps "
    "for a refractory period of r steps (Ember: r). The lateral inhibition of W1 uses delay 0, which "
    "acts on the next step, as Ember's one-step delay does.",
    "The W1 reset at each sample start sets the membrane potential and the traces; the refractory state "
    "and the thresholds carry over.",
    "STDP updates are applied per spike event in the synapse code (event-driven traces), clipped to the "
    "bounds at each update.",
    "Floats are float32 (prefs.core.default_float_dtype).",
    "C++ standalone: one binary per case, compiled before timing with Brian2's default flags; the time is "
    "the binary's own timing of its run loop, without process start and loading its arrays from disk "
    "(the process wall time is in the notes).",
]


def versions(variant: str) -> dict[str, str]:
    from importlib.metadata import version

    found = {"brian2": version("brian2"), "numpy": version("numpy")}
    if variant == "cython":
        found["cython"] = version("cython")
    if variant == "cpp_standalone":
        import subprocess

        compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False)
        found["compiler"] = compiler.stdout.splitlines()[0] if compiler.stdout else "unknown"
    return found


def _network(case: Case, units: int) -> tuple[Any, Any]:
    """Build the case's network in the current Brian2 device; return ``(network, spike_monitor)``."""
    import numpy as np
    from brian2 import Hz, Network, NeuronGroup, PoissonGroup, SpikeMonitor, Synapses, TimedArray, ms, mV

    rule = case.rule
    parameters = W1 if case.workload == "W1" else FORWARD
    namespace = {
        "v_rest": parameters.v_rest * mV,
        "v_reset": parameters.v_reset * mV,
        "v_threshold": parameters.v_threshold * mV,
        "tau_membrane": parameters.tau_membrane * ms,
        "tau_pre": rule.tau_pre * ms,
        "tau_post": rule.tau_post * ms,
        "eta_pre": rule.eta_pre,
        "eta_post": rule.eta_post,
        "w_min": rule.w_min,
        "w_max": rule.w_max,
    }
    equations = "dv/dt = (v_rest - v) / tau_membrane : volt (unless refractory)\n"
    if case.workload == "W1":
        equations += "dtheta/dt = -theta / tau_theta : volt\n"
        namespace.update(theta_plus=W1.theta_plus * mV, tau_theta=W1.tau_theta * ms, inhibition=W1.inhibition * mV)
        neurons = NeuronGroup(
            case.n, equations, threshold="v >= v_threshold + theta", reset="v = v_reset; theta += theta_plus",
            refractory=W1.refractory * ms, method="exact", namespace=namespace,
        )
        rates = workloads.images_for_run(case, units)[:, 0, :]
        namespace["stimulus"] = TimedArray(rates * Hz, dt=W1.steps_per_sample * ms)
        inputs = PoissonGroup(W1.input_size, rates="stimulus(t, i)", namespace=namespace)
    else:
        neurons = NeuronGroup(
            case.n, equations, threshold="v >= v_threshold", reset="v = v_reset",
            refractory=FORWARD.refractory * ms, method="exact", namespace=namespace,
        )
        inputs = PoissonGroup(FORWARD.input_size, FORWARD.input_rate_hz * Hz)
    neurons.v = parameters.v_rest * mV

    model = "w : 1\n"
    on_pre = "v_post += w * mV * int(not_refractory_post)\n"
    on_post = None
    if case.stdp:
        model += "dapre/dt = -apre / tau_pre : 1 (event-driven)\ndapost/dt = -apost / tau_post : 1 (event-driven)\n"
        on_pre += "apre = 1.0\nw = clip(w - eta_pre * apost, w_min, w_max)\n"
        on_post = "apost = 1.0\nw = clip(w + eta_post * apre, w_min, w_max)\n"
    synapses = Synapses(inputs, neurons, model=model, on_pre=on_pre, on_post=on_post, namespace=namespace)
    pre, post = np.meshgrid(np.arange(case.input_size), np.arange(case.n), indexing="ij")
    synapses.connect(i=pre.ravel(), j=post.ravel())
    synapses.w = workloads.input_weights(case).ravel()
    if case.delays:
        synapses.delay = workloads.input_delays(case).ravel() * ms

    objects = [inputs, neurons, synapses]
    if case.workload == "W1":
        lateral = Synapses(neurons, neurons, on_pre="v_post -= inhibition * int(not_refractory_post)", namespace=namespace)
        lateral.connect(condition="i != j")
        neurons.run_regularly("v = v_rest", dt=W1.steps_per_sample * ms, when="start")
        synapses.run_regularly("apre = 0.0\napost = 0.0", dt=W1.steps_per_sample * ms, when="start")
        objects.append(lateral)
    monitor = SpikeMonitor(neurons, record=False)
    return Network(*objects, monitor), monitor


class Runtime:
    """A case on a runtime code target (numpy or cython): built once, restored before each run."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.network, self.monitor = _network(case, case.units)
        self.network.store("initial")

    def prepare(self, units: int) -> None:
        self.network.restore("initial")

    def run(self, units: int) -> int:
        from brian2 import ms

        before = int(self.monitor.num_spikes)
        self.network.run(units * self.case.steps_per_unit * DT_MS * ms)
        return int(self.monitor.num_spikes) - before


# Written into the standalone main() before it frees its arrays: the binary's peak resident set size.
PEAK_RSS_CODE = """
{
    std::ifstream ember_status("/proc/self/status");
    std::ofstream ember_peak("%s");
    std::string ember_line;
    while (std::getline(ember_status, ember_line))
        if (ember_line.rfind("VmHWM:", 0) == 0) ember_peak << ember_line << std::endl;
}
"""


def _run_binary(directory: str) -> tuple[float, float, float]:
    """Execute a compiled standalone project once.

    Returns:
        ``(run loop s, process wall s, peak RSS MiB)``: the time the binary
        reports for its run loop (from ``results/last_run_info.txt``), the
        wall time of the whole process, and the binary's VmHWM.
    """
    import subprocess

    results = os.path.join(directory, "results", "")
    start = time.perf_counter()
    done = subprocess.run(["./main", "--results_dir", results], cwd=directory, stdout=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the Brian2 standalone binary in {directory} exited with status {done.returncode}")
    with open(os.path.join(results, "last_run_info.txt"), encoding="ascii") as info:
        run_loop_s = float(info.read().split()[0])
    with open(os.path.join(results, "peak_rss.txt"), encoding="ascii") as peak:
        peak_mib = int(peak.read().split()[1]) / 1024.0
    return run_loop_s, elapsed, peak_mib


def measure_standalone(case: Case, protocol: Protocol) -> dict[str, Any]:
    """Compile the case once with the C++ standalone device and time executions of the binary.

    The reported wall time is the binary's own timing of its run loop. It
    leaves out process start and loading the arrays, just as the other
    frameworks' timings leave out building the model. The process wall time
    goes into the notes.
    """
    from brian2 import device, ms, set_device

    directory = tempfile.mkdtemp(prefix="ember-bench-brian2-")
    try:
        set_device("cpp_standalone", directory=directory, build_on_run=False)
        device.insert_code("before_end", PEAK_RSS_CODE % os.path.join(directory, "results", "peak_rss.txt"))
        start = time.perf_counter()
        network, monitor = _network(case, case.units)
        network.run(case.units * case.steps_per_unit * DT_MS * ms)
        device.build(directory=directory, compile=True, run=False, with_output=False)
        build_s = time.perf_counter() - start

        _run_binary(directory)  # warm-up: page cache, first loads
        runs = [_run_binary(directory) for _ in range(protocol.repeats)]
        device.run(directory=directory, with_output=False)
        spikes = int(monitor.num_spikes)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    process_s = statistics.median(run[1] for run in runs)
    return result_record(
        case,
        framework=FRAMEWORK,
        variant="cpp_standalone",
        units=case.units,
        times_s=[run[0] for run in runs],
        spikes=[spikes] * len(runs),
        build_s=build_s,
        rss_after_import_mib=0.0,
        peak_rss_mib=max(run[2] for run in runs),
        versions=versions("cpp_standalone"),
        notes=[f"wall time of the whole binary, start and loading included: {process_s:.4f} s (median)"],
        memory_method="VmHWM of the standalone binary",
    )


def run_case(case: Case, protocol: Protocol, variant: str) -> dict[str, Any]:
    """Measure one case on Brian2 with the code target ``variant``."""
    if case.batch != 1:
        raise Unsupported("Brian2 has no batch dimension (one network per process); batch-1 cases only")
    if case.workload == "W1" and not case.stdp:
        raise Unsupported("W1 is defined with STDP on")

    import numpy as np
    from brian2 import defaultclock, ms, prefs, seed

    # Brian2 checks values against 1e50 after each run, which overflows a float32 cast; the check still works.
    warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
    prefs.core.default_float_dtype = np.float32
    prefs.devices.cpp_standalone.openmp_threads = 0
    defaultclock.dt = DT_MS * ms
    seed(0)
    if variant == "cpp_standalone":
        return measure_standalone(case, protocol)
    prefs.codegen.target = variant
    return measure(lambda: Runtime(case), case, protocol, framework=FRAMEWORK, variant=variant, versions=versions(variant))


if __name__ == "__main__":
    sys.exit(main_for(FRAMEWORK, VARIANTS, run_case))
