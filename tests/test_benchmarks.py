"""Tests of the benchmark harness: workload definitions, the protocol, the report writer, setup helpers.

Nothing here times anything. The report tests feed made-up records to the
formatter only; the protocol tests drive :func:`benchmarks.protocol.measure`
with a fake clock.
"""

from __future__ import annotations

import importlib
import json
import math
import sys

import numpy as np
import pytest

from benchmarks import envs, protocol, report, run, workloads
from benchmarks.peers import import_stubs
from benchmarks.protocol import Protocol
from benchmarks.workloads import FORWARD, W1, Case

# ------------------------------------------------------------------ workloads


def test_case_rejects_unknown_workload():
    with pytest.raises(ValueError, match="workload must be 'W1', 'W2' or 'W3', got 'W9'"):
        Case("W9", 10, 1, False, units=10, min_units=1)


def test_case_rejects_min_units_above_units():
    with pytest.raises(ValueError, match=r"min_units \(20\) must not exceed units \(10\)"):
        Case("W2", 10, 1, False, units=10, min_units=20)


def test_case_rejects_zero_neurons():
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        Case("W2", 0, 1, False, units=10, min_units=1)


def test_case_names_and_units():
    case = Case("W2", 1000, 32, True, units=1000, min_units=50)
    assert case.key == "W2-n1000-b32-stdp"
    assert case.title == "W2 N=1000 B=32 STDP"
    assert case.steps_per_unit == 1
    assert case.input_size == 1000
    assert not case.delays
    sample = Case("W1", 100, 1, True, units=4, min_units=1)
    assert sample.steps_per_unit == 250
    assert sample.input_size == 784
    assert sample.rule is W1.stdp
    assert Case("W3", 1000, 1, False, units=10, min_units=1).delays


def test_case_round_trip_and_unknown_field():
    case = Case("W3", 1000, 32, False, units=500, min_units=50)
    assert Case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
    with pytest.raises(ValueError, match=r"unknown case fields \['speed'\]"):
        Case.from_dict({**case.to_dict(), "speed": 1})


def test_full_cases_cover_the_issue_sizes():
    cases = workloads.full_cases()
    w1 = {(case.n, case.batch) for case in cases if case.workload == "W1"}
    assert w1 == {(n, b) for n in (100, 400, 1600) for b in (1, 32)}
    assert all(case.stdp for case in cases if case.workload == "W1")
    w2 = {(case.n, case.batch, case.stdp) for case in cases if case.workload == "W2"}
    assert w2 == {(n, b, s) for n in (1000, 10000) for b in (1, 32) for s in (False, True)}
    assert all(case.units == 1000 for case in cases if case.workload != "W1")
    assert {case.n for case in cases if case.workload == "W3"} == {1000}
    assert len({case.key for case in cases}) == len(cases)


def test_quick_cases_are_smaller_than_full():
    full = workloads.full_cases()
    quick = workloads.quick_cases()
    assert {case.workload for case in quick} == {"W1", "W2", "W3"}
    assert max(case.n for case in quick) <= 1000
    assert sum(case.units * case.steps_per_unit * case.batch for case in quick) < sum(
        case.units * case.steps_per_unit * case.batch for case in full
    )


def test_select_cases_filters_and_rejects():
    cases = workloads.quick_cases()
    assert {case.workload for case in workloads.select_cases(cases, ["W3"])} == {"W3"}
    assert workloads.select_cases(cases, None) == cases
    assert workloads.select_cases(cases, ["S1"]) == []
    with pytest.raises(ValueError, match=r"unknown workloads or cases \['W7'\]"):
        workloads.select_cases(cases, ["W2", "W7"])
    picked = workloads.select_cases(cases, ["W1", "W2-n1000-b32-stdp"])
    assert [case.key for case in picked] == ["W1-n100-b1-stdp", "W1-n100-b32-stdp", "W1-n400-b1-stdp", "W2-n1000-b32-stdp"]


def test_input_weights_are_reproducible_and_bounded():
    w1 = workloads.input_weights(Case("W1", 100, 1, True, units=1, min_units=1))
    assert w1.shape == (784, 100)
    assert w1.dtype == np.float32
    assert w1.min() >= 0.0
    assert w1.max() < W1.weight_scale
    forward_case = Case("W2", 50, 1, False, units=10, min_units=1)
    forward = workloads.input_weights(forward_case)
    assert forward.max() < FORWARD.weight_max
    np.testing.assert_array_equal(forward, workloads.input_weights(forward_case))


def test_input_delays_are_whole_steps_up_to_max():
    delays = workloads.input_delays(Case("W3", 1000, 1, False, units=10, min_units=1))
    assert delays.shape == (1000, 1000)
    np.testing.assert_array_equal(delays, np.round(delays))
    assert delays.min() == 0.0
    assert delays.max() == FORWARD.max_delay
    # 21 equally likely values, so each has close to 1/21 of the synapses.
    counts = np.bincount(delays.astype(np.int64).ravel())
    assert np.all(np.abs(counts / delays.size - 1 / 21) < 0.002)


def test_input_delays_only_for_w3():
    with pytest.raises(ValueError, match="has no delays; only W3 does"):
        workloads.input_delays(Case("W2", 10, 1, False, units=10, min_units=1))


def test_sample_images_match_diehl_cook_rates():
    rates = workloads.sample_images(50)
    assert rates.shape == (50, 784)
    assert rates.min() == 0.0
    assert rates.max() <= W1.max_rate_hz
    lit = (rates > 0).mean()
    # Binomial fraction of 39,200 pixels at p = 0.19: three standard deviations are 0.006.
    assert abs(lit - 0.19) < 0.006
    np.testing.assert_array_equal(rates, workloads.sample_images(50))
    batch = workloads.images_for_run(Case("W1", 10, 4, True, units=2, min_units=1), 2)
    assert batch.shape == (2, 4, 784)


def test_bytes_per_step_forward_hand_count():
    case = Case("W2", 1000, 1, False, units=10, min_units=1)
    terms = workloads.bytes_per_step(case, output_rate_hz=30.0)
    # 20 active rows of 1000 floats, and 5 words of state per neuron.
    assert terms["weights"] == pytest.approx(0.02 * 1000 * 1000 * 4)
    assert terms["neurons"] == 1000 * 5 * 4
    assert terms["stdp"] == 0.0
    assert terms["total"] == pytest.approx(80_000 + 20_000)


def test_bytes_per_step_stdp_and_delays_terms():
    stdp = workloads.bytes_per_step(Case("W2", 1000, 1, True, units=10, min_units=1), output_rate_hz=30.0)
    # The rows of the 20 inputs that spiked are written back; both traces are read and written.
    assert stdp["stdp"] == pytest.approx(0.02 * 1000 * 1000 * 4 + 2 * (1000 + 1000) * 4)
    # A batch of 2 also moves the columns of neurons that spiked in either sample.
    batch = workloads.bytes_per_step(Case("W2", 1000, 2, True, units=10, min_units=1), output_rate_hz=30.0)
    rows, columns = 1000 * (1 - 0.98**2), 1000 * (1 - 0.97**2)
    assert batch["stdp"] == pytest.approx((rows * 1000 + 2 * columns * 1000) * 4 + 2 * 2 * (1000 + 1000) * 4)
    delayed = workloads.bytes_per_step(Case("W3", 1000, 1, False, units=10, min_units=1), output_rate_hz=30.0)
    assert delayed["delays"] == pytest.approx(1000 * 0.02 * 1000 * 8 + 2 * 1000 * 4)


def test_bytes_per_step_batch_shares_rows():
    one = workloads.bytes_per_step(Case("W2", 1000, 1, False, units=10, min_units=1), 30.0)
    many = workloads.bytes_per_step(Case("W2", 1000, 32, False, units=10, min_units=1), 30.0)
    # Rows active in any of 32 samples: 1000 * (1 - 0.98^32), fewer than 32 x 20.
    assert many["weights"] == pytest.approx(1000 * (1 - 0.98**32) * 1000 * 4)
    assert many["weights"] < 32 * one["weights"]
    assert many["neurons"] == 32 * one["neurons"]


def test_seconds_per_unit_conversions():
    sample = Case("W1", 100, 32, True, units=1, min_units=1)
    assert workloads.seconds_per_unit(sample, 1e-4) == pytest.approx(0.025)
    forward = Case("W2", 100, 32, False, units=10, min_units=1)
    assert workloads.seconds_per_unit(forward, 1e-4) == pytest.approx(3.2)


# ------------------------------------------------------------------- protocol


def test_protocol_rejects_bad_values():
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        Protocol(repeats=0)
    with pytest.raises(ValueError, match="budget_s must be above 0 s"):
        Protocol(budget_s=0.0)


def test_choose_units_clamps_to_budget():
    case = Case("W2", 10, 1, False, units=1000, min_units=50)
    budget = Protocol(repeats=5, budget_s=10.0)
    assert workloads.FORWARD.steps == 1000
    assert protocol.choose_units(case, 0.001, budget) == 1000
    assert protocol.choose_units(case, 0.004, budget) == 500
    assert protocol.choose_units(case, 1.0, budget) == 50
    assert protocol.choose_units(case, 0.0, budget) == 1000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSimulation:
    """Advances the fake clock by a fixed time per unit and counts 3 spikes per unit."""

    def __init__(self, clock: FakeClock, seconds_per_unit: float, first_run_extra: float = 0.0) -> None:
        self.clock = clock
        self.seconds_per_unit = seconds_per_unit
        self.extra = first_run_extra
        self.calls: list[tuple[str, int]] = []

    def prepare(self, units: int) -> None:
        self.calls.append(("prepare", units))

    def run(self, units: int) -> int:
        self.calls.append(("run", units))
        self.clock.now += units * self.seconds_per_unit + self.extra
        self.extra = 0.0
        return 3 * units


def test_measure_full_runs_and_record(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(protocol.time, "perf_counter", clock)
    case = Case("W2", 10, 2, False, units=100, min_units=10)
    simulation = FakeSimulation(clock, seconds_per_unit=0.001)
    record = protocol.measure(lambda: simulation, case, Protocol(repeats=3, budget_s=10.0), framework="fake", variant="cpu", versions={"fake": "1"})
    assert simulation.calls == [("prepare", 10), ("run", 10)] + [("prepare", 100), ("run", 100)] * 3
    assert record["units"] == 100
    assert record["wall_s"] == pytest.approx(0.1)
    assert record["sample_steps_per_s"] == pytest.approx(100 * 2 / 0.1)
    assert record["seconds_per_unit"] == pytest.approx(0.1 / 100 / 2 * 1000 * 2)
    # 300 spikes over 10 neurons x 2 samples x 100 steps of 1 ms = 2 neuron-seconds.
    assert record["output_rate_hz"] == pytest.approx(150.0)
    assert record["notes"] == []


def test_measure_shortens_after_second_probe(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(protocol.time, "perf_counter", clock)
    case = Case("W2", 10, 1, False, units=1000, min_units=50)
    # The first run pays 100 s of one-off work; the second probe shows 0.01 s per step.
    simulation = FakeSimulation(clock, seconds_per_unit=0.01, first_run_extra=100.0)
    record = protocol.measure(lambda: simulation, case, Protocol(repeats=2, budget_s=4.0), framework="fake", variant="cpu", versions={})
    runs = [units for kind, units in simulation.calls if kind == "run"]
    assert runs == [50, 50, 200, 200]
    assert record["units"] == 200
    assert record["notes"] == ["runs shortened to 200 of 1000 steps to fit the time budget"]


def test_measure_single_run_when_too_slow(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(protocol.time, "perf_counter", clock)
    case = Case("W3", 10, 32, False, units=500, min_units=20)
    simulation = FakeSimulation(clock, seconds_per_unit=1.0)
    record = protocol.measure(lambda: simulation, case, Protocol(repeats=3, budget_s=6.0), framework="fake", variant="cpu", versions={})
    runs = [units for kind, units in simulation.calls if kind == "run"]
    # The warm-up, then one probe of min_units that is also the only timed run.
    assert runs == [20, 20]
    assert record["wall_s_runs"] == [20.0]
    assert record["notes"] == [
        "runs shortened to 20 of 500 steps to fit the time budget",
        "1 timed run instead of 3 to fit the time budget",
    ]


def test_emit_and_parse_result(capsys):
    protocol.emit({"status": "ok", "value": 1.5})
    printed = capsys.readouterr().out
    assert protocol.parse_result("noise\n" + printed) == {"status": "ok", "value": 1.5}
    assert protocol.parse_result("no record here\n") is None


def test_main_for_turns_errors_into_records(capsys):
    case = Case("W2", 10, 1, False, units=10, min_units=1)

    def unsupported(case, protocol_, variant):
        raise protocol.Unsupported("no delays here")

    def broken(case, protocol_, variant):
        raise ZeroDivisionError("division by zero")

    arguments = ["--case", json.dumps(case.to_dict()), "--variant", "cpu"]
    assert protocol.main_for("fake", ("cpu",), unsupported, arguments) == 0
    record = protocol.parse_result(capsys.readouterr().out)
    assert record["status"] == "unsupported"
    assert record["reason"] == "no delays here"
    assert protocol.main_for("fake", ("cpu",), broken, arguments) == 0
    record = protocol.parse_result(capsys.readouterr().out)
    assert record["status"] == "failed"
    assert record["reason"] == "ZeroDivisionError: division by zero"


def test_peak_rss_is_positive():
    assert protocol.peak_rss_mib() > 1.0


# --------------------------------------------------------------------- report


def fake_record(framework, variant, case, sample_steps_per_s, *, rate=30.0, peak=300.0, after_import=200.0):
    steps = case.units * case.steps_per_unit
    wall = steps * case.batch / sample_steps_per_s
    return {
        "status": "ok", "framework": framework, "variant": variant, "case": case.to_dict(),
        "units": case.units, "steps": steps, "wall_s": wall, "wall_s_runs": [wall],
        "sample_steps_per_s": sample_steps_per_s,
        "seconds_per_unit": workloads.seconds_per_unit(case, 1.0 / sample_steps_per_s),
        "output_rate_hz": rate, "build_s": 0.1, "peak_rss_mib": peak, "rss_after_import_mib": after_import,
        "memory_method": "VmHWM", "versions": {framework: "1.0"}, "notes": [], "python": "3.11.7",
    }


W2_CASE = Case("W2", 1000, 1, False, units=1000, min_units=50)
W3_CASE = Case("W3", 1000, 32, False, units=1000, min_units=50)


def fake_run():
    results = [
        fake_record("ember", "cpu", W2_CASE, 8000.0),
        fake_record("inferno", "cpu", W2_CASE, 5000.0),
        fake_record("brian2", "cpp_standalone", W2_CASE, 20000.0, peak=150.0, after_import=0.0),
        protocol.not_measured(W2_CASE, framework="brian2", variant="numpy", status="failed", reason="MemoryError: out of memory"),
        fake_record("ember", "cpu", W3_CASE, 4000.0),
        protocol.not_measured(W3_CASE, framework="bindsnet", variant="cpu", status="unsupported", reason="no synaptic delays"),
    ]
    return {
        "meta": {
            "mode": "quick", "command": "python -m benchmarks.run --quick", "started": "2025-01-01 10:00 UTC",
            "finished": "2025-01-01 10:05 UTC", "device": "cpu", "protocol": {"repeats": 3, "budget_s": 6.0, "threads": 1},
            "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "os": "Linux"},
            "bandwidth": {"bytes_per_s": 10e9, "method": "numpy copy"}, "load": {"start": 0.5, "end": 3.25},
        },
        "envs": {"bindsnet": {"python": "/x/python", "notes": ["stubbed torchvision"]}, "brian2": {"error": "pip failed"}},
        "results": results,
        "service": {"status": "not_measured", "reason": "S1 hook not written"},
        "differences": {"Inferno": ["weights are currents"]},
    }


def test_summary_picks_fastest_peer_and_ratio():
    rows = report.summary_rows(fake_run()["results"])
    assert [row["case"] for row in rows] == [W2_CASE, W3_CASE]
    assert rows[0]["peer"]["framework"] == "brian2"
    assert rows[0]["ratio"] == pytest.approx(0.4)
    assert rows[1]["peer"] is None
    assert rows[1]["ratio"] is None


def test_roofline_rows_from_fake_numbers():
    [w2, w3] = report.roofline_rows(fake_run()["results"], bandwidth_bytes_per_s=10e9)
    assert w2["bytes"]["total"] == pytest.approx(100_000)
    assert w2["limit_s"] == pytest.approx(1e-5)
    assert w2["ember_s"] == pytest.approx(1 / 8000)
    assert w2["fraction"] == pytest.approx(0.08)
    assert w3["case"] == W3_CASE


def test_report_tables_from_fake_numbers():
    text = report.write_report(fake_run())
    assert "| W2 N=1000 B=1 | 0.125 s per 1000 steps | Brian2 C++ standalone: 0.05 | 0.40x (Ember slower) |" in text
    assert "| W3 N=1000 B=32 | 8 s per 1000 steps | no peer measured | - |" in text
    assert "| W2 N=1000 B=1 | Inferno | 0.2 | 5,000 | 0.2 (1000 steps) | 300 | 100 | 30 |  |" in text
    assert "| W2 N=1000 B=1 | Brian2 numpy | failed: MemoryError: out of memory |" in text
    assert "- BindsNET, unsupported: no synaptic delays. Cases: W3 N=1000 B=32." in text
    assert "- Brian2 numpy, failed: MemoryError: out of memory. Cases: W2 N=1000 B=1." in text
    assert "- brian2: environment not available, pip failed" in text
    assert "- S1 service overhead: S1 hook not written" in text
    assert "| W2 N=1000 B=1 | 97.7 | weights 78.1, neurons 19.5 | 10 | 125 | 8 % |" in text
    assert "Memory bandwidth measured in this run: 10.00 GB/s (numpy copy)." in text
    assert "One-minute load average: 0.50 at the start of the run, 3.25 at the end." in text
    assert "- weights are currents" in text
    assert "- bindsnet" not in text  # versions are listed only for frameworks with measured records
    assert text.endswith("\n")


def test_ratio_text_and_significant_digits():
    assert report.significant(0.000123456) == "0.000123"
    assert report.significant(123456.7) == "123,457"
    assert report.significant(None) == "-"
    assert report.significant(0.0) == "0"
    assert report._ratio_text(2.5) == "2.50x (Ember faster)"
    assert report._ratio_text(None) == "-"


def test_report_main_reads_saved_run(tmp_path):
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(fake_run()), encoding="utf-8")
    output = tmp_path / "BENCHMARKS.md"
    assert report.main([str(saved), "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == report.write_report(fake_run())


# ------------------------------------------------------------ setup and runner


def test_import_stub_placeholders(monkeypatch):
    monkeypatch.setattr(import_stubs, "STUBBED_PACKAGES", ("ember_bench_probe_package",))
    finder = import_stubs._StubFinder()
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, finder])
    try:
        datasets = importlib.import_module("ember_bench_probe_package.datasets")
        wrapper = type("Wrapper", (datasets.MNIST,), {})
        with pytest.raises(ImportError, match="replaced by an import stub"):
            wrapper()
        assert importlib.import_module("json") is json
    finally:
        for name in [name for name in sys.modules if name.startswith("ember_bench_probe_package")]:
            del sys.modules[name]


def test_env_specs_and_interpreters(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_BENCH_HOME", str(tmp_path))
    assert envs.venv_python("inferno") == tmp_path / "venvs" / "inferno" / "bin" / "python"
    assert envs.find_python("") == (sys.executable, ".".join(map(str, sys.version_info[:3])))
    assert envs.read_marker("inferno") is None
    with pytest.raises(ValueError, match="unknown peer 'nest'"):
        envs.resolve_spec("nest")
    spec = envs.SPECS["bindsnet"]
    assert ("--no-deps", "bindsnet==0.3.4") in spec.installs
    assert not any("torchvision" in argument for install in spec.installs for argument in install)
    assert spec.digest("3.11.7") != spec.digest("3.12.1")


def test_peer_modules_import_without_their_frameworks():
    differences = run.model_differences()
    assert set(differences) == {"Inferno", "BindsNET", "Brian2"}
    assert all(differences.values())
    assert "brian2" not in sys.modules
    assert "inferno" not in sys.modules


def test_process_environment_pins_one_thread():
    environment = run.process_environment(Protocol(threads=1))
    assert environment["OMP_NUM_THREADS"] == "1"
    assert environment["MKL_NUM_THREADS"] == "1"
    assert environment["PYTHONPATH"] == str(run.REPOSITORY)


def test_runners_on_cuda_skip_engine_row():
    assert [runner.variant for runner in run.runners("cuda")][:3] == ["cuda", "cuda", "cuda"]
    assert [runner.framework for runner in run.runners("cuda")][:3] == ["ember", "inferno", "bindsnet"]


def test_runners_list_every_peer_variant():
    labels = [runner.label for runner in run.runners("cpu")]
    assert labels == [
        "Ember", "Ember, PyTorch engine", "Inferno", "BindsNET", "Brian2 C++ standalone", "Brian2 cython", "Brian2 numpy",
    ]


def test_ember_forward_case_fires_in_expected_range():
    from benchmarks import ember_bench

    case = Case("W2", 50, 2, False, units=300, min_units=50)
    simulation = ember_bench.Forward(case, "cpu", "auto")
    simulation.prepare(300)
    spikes = simulation.run(300)
    rate = spikes / (50 * 2 * 0.3)
    # Mean drive settles 20 mV above rest against a 15 mV gap (tau 20 ms, 2 ms refractory): about 35 Hz.
    assert 15.0 < rate < 60.0
    assert math.isfinite(rate)


def test_service_section_reports_overhead():
    from benchmarks.report import _service_section

    record = {
        "status": "ok", "train_samples": 1000, "repeats": 2, "run_s": 20.0, "serve_s": 21.0,
        "overhead_ratio": 1.05, "run_accuracy": 0.78, "serve_accuracy": 0.78,
    }
    lines = _service_section(record)
    assert lines[0] == "## S1: service overhead"
    assert "| `ember run` | 20.00 | 0.78 |" in lines
    assert "The service takes +5.0 % against the local run." in lines
    faster = _service_section({**record, "serve_s": 19.0, "overhead_ratio": 0.95})
    assert "The service takes -5.0 % against the local run. The service was faster: `ember run` also counts " \
        "starting a process and importing Ember and PyTorch, which the running server did before the submit." in faster
    assert _service_section({"status": "failed", "reason": "x"}) == []
    assert _service_section(None) == []


def target_run():
    """Ember against two PyTorch peers and Brian2 on W2 (with and without STDP), W3 and a batch."""
    w2 = Case("W2", 1000, 1, False, units=1000, min_units=50)
    w2_stdp = Case("W2", 1000, 1, True, units=1000, min_units=50)
    w3 = Case("W3", 1000, 1, False, units=1000, min_units=50)
    w2_batch = Case("W2", 1000, 32, False, units=1000, min_units=50)
    small = Case("W2", 100, 1, False, units=1000, min_units=50)
    return [
        fake_record("ember", "cpu", w2, 200_000.0, peak=250.0),
        fake_record("ember", "cpu/torch", w2, 6_000.0, peak=240.0),
        fake_record("inferno", "cpu", w2, 5_000.0, peak=251.0),
        fake_record("bindsnet", "cpu", w2, 9_000.0, peak=385.0),
        fake_record("brian2", "cpp_standalone", w2, 40_000.0, peak=46.0),
        fake_record("ember", "cpu", w2_stdp, 100_000.0, peak=260.0),
        fake_record("inferno", "cpu", w2_stdp, 300.0, peak=255.0),
        fake_record("ember", "cpu", w3, 80_000.0, peak=300.0),
        fake_record("inferno", "cpu", w3, 20.0, peak=360.0),
        # Per sample, the batch is slower than Brian2 at batch 1: the target counts Brian2's batch-1 throughput.
        fake_record("ember", "cpu", w2_batch, 30_000.0, peak=280.0),
        fake_record("inferno", "cpu", w2_batch, 28_000.0, peak=330.0),
        fake_record("ember", "cpu", small, 1_000.0),
        fake_record("inferno", "cpu", small, 2_000.0),
    ]


def test_target_rows_check_each_target():
    rows = report.target_rows(target_run(), {"status": "ok", "overhead_ratio": 1.06})
    throughput = {row["case"].key: row for row in rows["throughput"]}
    assert "W2-n100-b1" not in throughput  # the target counts N >= 400 only
    assert throughput["W2-n1000-b1"]["peer"]["framework"] == "brian2"
    assert throughput["W2-n1000-b1"]["ratio"] == pytest.approx(5.0)
    assert throughput["W2-n1000-b32"]["peer"]["framework"] == "brian2"
    assert throughput["W2-n1000-b32"]["met"] is False
    [stdp] = rows["stdp"]
    assert stdp["cost"] == pytest.approx(2.0)  # half the throughput: exactly at the target
    assert stdp["met"] is True
    # The plain step moves 80 kB of rows and 20 kB of neuron state; STDP writes the rows back and moves 16 kB of traces.
    assert stdp["least_bytes"] == pytest.approx((100_000 + 96_000) / 100_000)
    [delays] = rows["delays"]
    assert delays["cost"] == pytest.approx(2.5)
    assert delays["met"] is False
    # 20 000 delivered weights of 8 bytes each, and the current slot of 1000 cells read and cleared.
    assert delays["least_bytes"] == pytest.approx((100_000 + 168_000) / 100_000)
    memory = {row["case"].key: row for row in rows["memory"]}
    assert memory["W2-n1000-b1"]["peer"]["framework"] == "inferno"
    assert memory["W2-n1000-b1"]["met"] is True
    assert memory["W2-n1000-b1-stdp"]["met"] is False
    [service] = rows["service"]
    assert service["overhead"] == pytest.approx(0.06)
    assert service["met"] is False


def test_targets_section_in_report():
    run = fake_run()
    run["results"] = target_run()
    text = report.write_report(run)
    assert "## Targets" in text
    assert "| W2 N=1000 B=1 STDP | 10 | 5 | 2.00x | 1.96x | met |" in text
    assert "| W3 N=1000 B=1 | 12.5 | 5 | 2.50x | 2.68x | missed |" in text
    assert "| W2 N=1000 B=32 | 30,000 | Brian2 C++ standalone: 40,000 | 0.75x | missed |" in text
    assert "| W2 N=1000 B=1 | 250 | Inferno: 251 | met |" in text


def test_merged_run_replaces_the_cases_measured_again():
    first = fake_run()
    later = fake_run()
    later["meta"].update(command="python -m benchmarks.run --only W3", started="2025-01-02 09:00 UTC", finished="2025-01-02 09:10 UTC")
    later["results"] = [fake_record("ember", "cpu", W3_CASE, 9000.0)]
    merged = report.merge_runs(first, later, "a faster kernel")
    w3 = [record for record in merged["results"] if record["case"]["workload"] == "W3"]
    assert [record["sample_steps_per_s"] for record in w3] == [9000.0]
    # Records keep the case order of the first run.
    assert [record["case"]["workload"] for record in merged["results"]] == ["W2"] * 4 + ["W3"]
    assert len([record for record in merged["results"] if record["case"]["workload"] == "W2"]) == 4
    text = report.write_report(merged)
    assert "The rows of W3 N=1000 B=32 come from a later run, `python -m benchmarks.run --only W3`" in text
    assert "after a faster kernel" in text
    assert "Every number below comes from that one run" not in text
