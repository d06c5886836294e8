"""Write BENCHMARKS.md from the records of one benchmark run.

A run is a dict with ``meta`` (mode, command, times, protocol, machine, memory
bandwidth), ``envs`` (each peer's interpreter and install notes, or the error
that stopped its setup), ``results`` (the records of
:mod:`benchmarks.protocol`), ``service`` (the S1 record) and
``differences`` (each peer's list of model differences).

``python -m benchmarks.report RUN.json [--output BENCHMARKS.md]`` rewrites
the report from a saved run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.workloads import DT_MS, Case, bytes_per_step, per_unit_label

LABELS = {
    ("ember", "cpu"): "Ember",
    ("ember", "cpu/torch"): "Ember, PyTorch engine",
    ("ember", "cuda"): "Ember (CUDA)",
    ("inferno", "cpu"): "Inferno",
    ("inferno", "cuda"): "Inferno (CUDA)",
    ("bindsnet", "cpu"): "BindsNET",
    ("bindsnet", "cuda"): "BindsNET (CUDA)",
    ("brian2", "cpp_standalone"): "Brian2 C++ standalone",
    ("brian2", "cython"): "Brian2 cython",
    ("brian2", "numpy"): "Brian2 numpy",
}

WORKLOAD_TITLES = {
    "W1": "W1: Diehl & Cook training",
    "W2": "W2: plain LIF forward (and with pair STDP)",
    "W3": "W3: heterogeneous delays",
}


def label(record: dict[str, Any]) -> str:
    """Return the display name of a record's framework and variant."""
    key = (record["framework"], record.get("variant", ""))
    return LABELS.get(key, f"{key[0]} {key[1]}".strip())


def significant(value: float | None, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits; ``-`` for None."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def case_of(record: dict[str, Any]) -> Case:
    return Case.from_dict(record["case"])


def group_by_case(results: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group records by case key, keeping the order in which cases first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in results:
        groups.setdefault(case_of(record).key, []).append(record)
    return groups


def fastest(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the measured record with the most sample-steps per second, or None."""
    measured = [record for record in records if record["status"] == "ok"]
    return max(measured, key=lambda record: record["sample_steps_per_s"], default=None)


def speed_ratio(ember: dict[str, Any] | None, peer: dict[str, Any] | None) -> float | None:
    """Return Ember's sample-steps per second divided by the peer's (above 1: Ember is faster)."""
    if ember is None or peer is None or ember["status"] != "ok" or peer["status"] != "ok":
        return None
    return ember["sample_steps_per_s"] / peer["sample_steps_per_s"]


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per case: Ember's record, the fastest peer's record and the speed ratio."""
    rows = []
    for key, records in group_by_case(results).items():
        ember = fastest(record for record in records if record["framework"] == "ember")
        peer = fastest(record for record in records if record["framework"] != "ember")
        rows.append({"case": case_of(records[0]), "ember": ember, "peer": peer, "ratio": speed_ratio(ember, peer)})
    return rows


def roofline_rows(results: list[dict[str, Any]], bandwidth_bytes_per_s: float) -> list[dict[str, Any]]:
    """Return per case: the bytes a step must move, the time that implies, and Ember's fraction of that limit.

    The output rate that sets the STDP and lateral traffic is the one Ember
    measured in the same case.
    """
    rows = []
    for records in group_by_case(results).values():
        ember = fastest(record for record in records if record["framework"] == "ember")
        if ember is None:
            continue
        case = case_of(ember)
        terms = bytes_per_step(case, ember["output_rate_hz"])
        limit_s = terms["total"] / bandwidth_bytes_per_s
        actual_s = ember["wall_s"] / ember["steps"]
        rows.append({"case": case, "bytes": terms, "limit_s": limit_s, "ember_s": actual_s, "fraction": limit_s / actual_s})
    return rows


#: The peers written in PyTorch, whose peak memory the memory target compares with.
PYTORCH_PEERS = ("inferno", "bindsnet")
#: The targets of the benchmark issue: STDP and delays cost at most this times the plain step.
COST_TARGET = 2.0
#: The service may add at most this fraction to a job's wall time.
SERVICE_TARGET = 0.05


#: The limits of Ember's cost ratios, as profiled with perf on the 2-core development machine.
COST_NOTES = [
    "- The least-bytes ratio divides the least bytes a step must move (see the roofline below) by those of "
    "the step without STDP or delays. Where it is above 2, a step that moves its bytes no faster than the "
    "plain one cannot meet the target; where it is below, the target is within reach in principle.",
    "- STDP with one sample: one pass along each spiking row pays its deferred potentiation, sends it out, "
    "depresses it and starts it owing again, so the row is read once and written back once, and the "
    "least-bytes ratio stays below 2. Besides the row, the pass reads two vectors of per-neuron spike sums "
    "(one per span of up to 32 steps, in the weights' dtype) that stay in cache.",
    "- STDP with a batch cannot defer potentiation (each sample has its own presynaptic trace), so every "
    "column that spikes in some sample is read and written for all rows at every step. The least-bytes "
    "ratio is above 2.",
    "- Delays: each delivered synapse is a scattered add into the delay line, about 0.43 ns each on the "
    "development machine (AVX-512 gather and scatter measured slower, 0.53 ns), while the plain step adds "
    "a row as vectors, at a few hundredths of a ns per synapse. With 20 spiking inputs of 1000 synapses the scatter alone "
    "takes about 8.6 µs per step, more than three plain steps of 2.4 µs.",
]


def _ember(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    return fastest(record for record in records if record["framework"] == "ember")


def _step_seconds(record: dict[str, Any]) -> float:
    """Seconds per step of the whole batch."""
    return record["wall_s"] / record["steps"]


def target_rows(results: list[dict[str, Any]], service: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Check the benchmark targets against the records of one run.

    Returns a dict of row lists:

    - ``throughput``: each case with N >= 400, Ember's sample-steps per second
      against the best peer's. For a batch, Brian2 (which has no batch) enters
      with its per-sample throughput at batch 1 in the same workload and N.
    - ``stdp``: Ember's step time with pair STDP over the one without, per W2 size and batch,
      and ``least_bytes``, the same ratio for the least bytes per step (see ``bytes_per_step``).
    - ``delays``: Ember's W3 step time over W2's, per size and batch, with ``least_bytes`` too.
    - ``memory``: Ember's peak RSS against the leanest PyTorch peer's in the same case.
    - ``service``: the S1 overhead, when it was measured.

    Each row has ``met`` (bool) and the numbers it was decided on.
    """
    groups = group_by_case(results)
    rows: dict[str, list[dict[str, Any]]] = {"throughput": [], "stdp": [], "delays": [], "memory": [], "service": []}
    for key, records in groups.items():
        case = case_of(records[0])
        ember = _ember(records)
        if ember is None:
            continue
        peers = [record for record in records if record["framework"] != "ember" and record["status"] == "ok"]
        if case.batch > 1:
            single = Case(case.workload, case.n, 1, case.stdp, units=case.units, min_units=case.min_units).key
            peers += [r for r in groups.get(single, []) if r["framework"] == "brian2" and r["status"] == "ok"]
        if case.n >= 400:
            peer = max(peers, key=lambda record: record["sample_steps_per_s"], default=None)
            if peer is not None:
                rows["throughput"].append({
                    "case": case, "ember": ember, "peer": peer, "ratio": ember["sample_steps_per_s"] / peer["sample_steps_per_s"],
                    "met": ember["sample_steps_per_s"] > peer["sample_steps_per_s"],
                })
        lean = [record for record in records if record["framework"] in PYTORCH_PEERS and record["status"] == "ok"]
        if lean:
            leanest = min(lean, key=lambda record: record["peak_rss_mib"])
            rows["memory"].append({"case": case, "ember": ember, "peer": leanest, "met": ember["peak_rss_mib"] <= leanest["peak_rss_mib"]})
        base_key = Case("W2", case.n, case.batch, False, units=case.units, min_units=case.min_units).key
        base = _ember(groups.get(base_key, []))
        if base is None or key == base_key or case.workload == "W1":
            continue
        kind = "stdp" if case.workload == "W2" else "delays"
        if case.workload == "W3" and case.stdp:
            continue
        cost = _step_seconds(ember) / _step_seconds(base)
        least_bytes = bytes_per_step(case, ember["output_rate_hz"])["total"]
        base_bytes = bytes_per_step(case_of(base), base["output_rate_hz"])["total"]
        rows[kind].append({"case": case, "ember": ember, "base": base, "cost": cost, "least_bytes": least_bytes / base_bytes, "met": cost <= COST_TARGET})
    if service is not None and service.get("status") == "ok":
        overhead = service["overhead_ratio"] - 1.0
        rows["service"].append({"overhead": overhead, "met": overhead <= SERVICE_TARGET})
    return rows


def _targets_section(results: list[dict[str, Any]], service: dict[str, Any] | None) -> list[str]:
    rows = target_rows(results, service)
    mark = lambda met: "met" if met else "missed"  # noqa: E731
    lines = ["## Targets", "", "The targets of the benchmark issue, checked against the numbers of this run.", ""]
    if rows["throughput"]:
        lines += [
            "Throughput above every peer's with N >= 400 (for a batch, Brian2 enters with its batch-1 per-sample throughput):",
            "",
            *_table(["case", "Ember sample-steps/s", "best peer", "ratio", "target"], [
                [row["case"].title, significant(row["ember"]["sample_steps_per_s"]),
                 f"{label(row['peer'])}: {significant(row['peer']['sample_steps_per_s'])}", f"{row['ratio']:.2f}x", mark(row["met"])]
                for row in rows["throughput"]
            ]),
            "",
        ]
    for kind, title in (("stdp", "STDP costs at most 2x the step without it (W2, same N and batch)"),
                        ("delays", "Delays cost at most 2x the step without them (W3 against W2, same N and batch)")):
        if rows[kind]:
            lines += [f"{title}:", "", *_table(["case", "µs per step", "without", "cost", "least-bytes ratio", "target"], [
                [row["case"].title, significant(_step_seconds(row["ember"]) * 1e6), significant(_step_seconds(row["base"]) * 1e6),
                 f"{row['cost']:.2f}x", f"{row['least_bytes']:.2f}x", mark(row["met"])]
                for row in rows[kind]
            ]), ""]
    if rows["memory"]:
        lines += ["Peak memory no higher than the leanest PyTorch peer's (peak RSS, MiB):", "", *_table(["case", "Ember", "leanest PyTorch peer", "target"], [
            [row["case"].title, significant(row["ember"]["peak_rss_mib"]), f"{label(row['peer'])}: {significant(row['peer']['peak_rss_mib'])}", mark(row["met"])]
            for row in rows["memory"]
        ]), ""]
    for row in rows["service"]:
        lines += [f"Service overhead at most 5 %: {100.0 * row['overhead']:+.1f} %, {mark(row['met'])}.", ""]
    if any(not row["met"] for kind in ("stdp", "delays") for row in rows[kind]):
        lines += ["What bounds the cost ratios, and why some targets are missed:", "", *COST_NOTES, ""]
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x " + ("(Ember faster)" if ratio >= 1 else "(Ember slower)")


def _ember_text(ember: dict[str, Any] | None, unit: str) -> str:
    if ember is None:
        return "not measured"
    text = f"{significant(ember['seconds_per_unit'])} {unit}"
    return text if label(ember) == "Ember" else f"{label(ember)}: {text}"


def _summary_section(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for row in summary_rows(results):
        case, ember, peer = row["case"], row["ember"], row["peer"]
        unit = per_unit_label(case.workload)
        rows.append([
            case.title,
            _ember_text(ember, unit),
            f"{label(peer)}: {significant(peer['seconds_per_unit'])}" if peer else "no peer measured",
            _ratio_text(row["ratio"]),
        ])
    return [
        "## Summary",
        "",
        "Speed ratio: Ember's sample-steps per second divided by the fastest peer's in the same case "
        "(above 1, Ember is faster).",
        "",
        *_table(["case", "Ember", "fastest peer", "speed ratio"], rows),
        "",
    ]


def _detail_section(results: list[dict[str, Any]], workload: str) -> list[str]:
    records = [record for record in results if record["case"]["workload"] == workload]
    if not records:
        return []
    rows = []
    for record in records:
        case = case_of(record)
        if record["status"] != "ok":
            rows.append([case.title, label(record), f"{record['status']}: {record['reason']}", "", "", "", "", "", ""])
            continue
        above = record["peak_rss_mib"] - record["rss_after_import_mib"]
        rows.append([
            case.title,
            label(record),
            significant(record["seconds_per_unit"]),
            significant(record["sample_steps_per_s"]),
            f"{significant(record['wall_s'])} ({record['steps']} steps)",
            significant(record["peak_rss_mib"]),
            significant(above),
            significant(record["output_rate_hz"]),
            "; ".join(record.get("notes", [])),
        ])
    unit = per_unit_label(workload)
    header = ["case", "framework", unit, "sample-steps/s", "wall s per run", "peak RSS MiB", "above imports MiB", "output Hz", "notes"]
    return [f"### {WORKLOAD_TITLES[workload]}", "", *_table(header, rows), ""]


OUTPUT_RATE_NOTE = (
    "Output Hz is the mean firing rate of the N neurons over the timed runs, a check that every framework "
    "simulates a similar activity. W2 and W3 runs start from rest and the first spikes come after about "
    "25 ms, so runs shortened to a few tens of steps show little or no firing. With a batch, pair STDP sums "
    "its updates over the samples, so the weights move about batch-size times faster than with one sample; "
    "over 1000 steps depression lowers the rate, by an amount that depends on each framework's trace and "
    "clamping conventions (see the model differences below), while a run shortened to a few steps shows the "
    "early rate."
)


def _not_measured_section(results: list[dict[str, Any]], envs: dict[str, Any], service: dict[str, Any] | None) -> list[str]:
    """List what was not measured, one line per reason, with the frameworks and cases it concerns."""
    by_reason: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for record in results:
        if record["status"] == "ok":
            continue
        frameworks, cases = by_reason.setdefault((record["status"], record["reason"]), ([], []))
        if label(record) not in frameworks:
            frameworks.append(label(record))
        if case_of(record).title not in cases:
            cases.append(case_of(record).title)
    lines = ["## Not measured", ""]
    for (status, reason), (frameworks, cases) in by_reason.items():
        lines.append(f"- {', '.join(frameworks)}, {status}: {reason}. Cases: {', '.join(cases)}.")
    for name, env in envs.items():
        if env.get("error"):
            lines.append(f"- {name}: environment not available, {env['error']}")
    if service is not None and service.get("status") != "ok":
        lines.append(f"- S1 service overhead: {service.get('reason', service.get('status'))}")
    if len(lines) == 2:
        lines.append("Every framework ran every case it was asked to.")
    return [*lines, ""]


def _roofline_section(results: list[dict[str, Any]], bandwidth: dict[str, Any]) -> list[str]:
    rate = bandwidth["bytes_per_s"]
    rows = []
    for row in roofline_rows(results, rate):
        terms = row["bytes"]
        parts = ", ".join(f"{name} {significant(terms[name] / 1024)}" for name in ("weights", "neurons", "stdp", "delays", "lateral") if terms[name])
        rows.append([
            row["case"].title,
            significant(terms["total"] / 1024),
            parts,
            significant(row["limit_s"] * 1e6),
            significant(row["ember_s"] * 1e6),
            f"{100 * row['fraction']:.2g} %",
        ])
    return [
        "## Roofline",
        "",
        f"Memory bandwidth measured in this run: {bandwidth['bytes_per_s'] / 1e9:.2f} GB/s ({bandwidth['method']}).",
        "",
        "Bytes per step count the least traffic an event-driven step needs: the weight rows of inputs that "
        "spiked (read once, shared by the batch), each neuron's state read and written once, for STDP the "
        "rows of inputs and columns of neurons that spiked (read and written) plus every trace, for delays "
        "one scattered write per delivered synapse plus the current ring-buffer slot, and for W1 the lateral "
        "inhibition of the neurons that spiked. Firing rates are the ones Ember measured. The limit is those "
        "bytes divided by the measured bandwidth; Ember's fraction is that limit divided by Ember's time per "
        "step. Working sets below the last-level cache run faster than memory bandwidth allows, so the limit "
        "is only a guide there.",
        "",
        *_table(["case", "KiB per step", "terms (KiB)", "limit µs per step", "Ember µs per step", "Ember's fraction of the limit"], rows),
        "",
    ]


def _differences_section(differences: dict[str, list[str]]) -> list[str]:
    lines = ["## How each peer's model differs from Ember's", ""]
    for name, items in differences.items():
        lines.append(f"**{name}**")
        lines.append("")
        lines += [f"- {item}" for item in items]
        lines.append("")
    return lines


def _versions_section(results: list[dict[str, Any]], envs: dict[str, Any]) -> list[str]:
    seen: dict[str, tuple[str, dict[str, str]]] = {}
    for record in results:
        if record.get("versions") and record["framework"] not in seen:
            seen[record["framework"]] = (record.get("python", ""), record["versions"])
    lines = ["## Versions and environments", ""]
    for name, (python, versions) in seen.items():
        packages = ", ".join(f"{package} {version}" for package, version in versions.items())
        lines.append(f"- {name}: Python {python}; {packages}")
        for note in envs.get(name, {}).get("notes", []):
            lines.append(f"  - {note}")
    return [*lines, ""]


def _device_text(device: str) -> str:
    if device == "cpu":
        return "the CPU"
    return f"{device} for the PyTorch frameworks and the CPU for Brian2"


def _load_lines(load: dict[str, float] | None) -> list[str]:
    if not load:
        return []
    return [
        f"One-minute load average: {load['start']:.2f} at the start of the run, {load['end']:.2f} at the end. "
        "A load above the number of cores means other processes shared the CPU during the run, which slows "
        "every framework and widens the spread between runs.",
        "",
    ]


def _provenance_text(meta: dict[str, Any]) -> str:
    """Say which run each number comes from: one run, or one run with some cases measured again in later ones."""
    merged = meta.get("merged") or []
    if not merged:
        return "Every number below comes from that one run; rerun the command to refresh this page."
    parts = [
        f"The rows of {', '.join(entry['cases'])} come from a later run, `{entry['command']}`, "
        f"{entry['started']} to {entry['finished']}, which measured those cases again after {entry['reason']}."
        for entry in merged
    ]
    return " ".join(parts) + " Every other number comes from the first run; rerun its command to refresh this page from one run."


def merge_runs(first: dict[str, Any], later: dict[str, Any], reason: str) -> dict[str, Any]:
    """Return ``first`` with the records of every case that ``later`` measured replaced by ``later``'s.

    Records keep the order of the cases in ``first``. The merged run's
    ``meta["merged"]`` lists, per later run, the cases, its command and
    times, and ``reason``, which the report's header states.
    """
    replaced = {case_of(record).key for record in later["results"]}
    order = list(dict.fromkeys(case_of(record).key for record in first["results"]))
    unchanged = [record for record in first["results"] if case_of(record).key not in replaced]
    results = sorted(
        unchanged + list(later["results"]),
        key=lambda record: order.index(case_of(record).key) if case_of(record).key in order else len(order),
    )
    meta = dict(first["meta"])
    meta["merged"] = [*(meta.get("merged") or []), {
        "cases": list(dict.fromkeys(case_of(record).title for record in later["results"])),
        "command": later["meta"]["command"],
        "started": later["meta"]["started"],
        "finished": later["meta"]["finished"],
        "reason": reason,
    }]
    return {**first, "meta": meta, "results": results}


def _header(meta: dict[str, Any]) -> list[str]:
    machine, protocol = meta["machine"], meta["protocol"]
    return [
        "# Benchmarks: Ember, Inferno, BindsNET and Brian2",
        "",
        f"Generated by `{meta['command']}` ({meta['mode']} run), {meta['started']} to {meta['finished']}. "
        + _provenance_text(meta),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']:.0f} GiB memory, {machine['os']}.",
        "",
        *_load_lines(meta.get("load")),
        "Protocol: each (framework, case) pair runs in a fresh process with 1 thread "
        f"(`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`), float32, dt = {DT_MS:g} ms, on {_device_text(meta['device'])}. "
        f"After a warm-up run, {protocol['repeats']} timed runs give the median. A framework whose runs would "
        f"exceed {protocol['budget_s']:g} s per case gets shorter runs (noted per row). Timings cover the "
        "simulation loop, input spike generation included, and leave out building the model; Brian2 C++ "
        "standalone reports its binary's own run-loop time (the note gives the whole process).",
        "",
        "Memory: peak resident set size of the process that runs the simulation, imported libraries "
        "included: VmHWM from /proc/self/status (the kernel's peak RSS of the process's own address space; "
        "`ru_maxrss` would carry over the parent's peak through fork and exec). 'Above imports' subtracts "
        "the value read after the imports. For Brian2 C++ standalone it is the compiled binary's own VmHWM, "
        "written by code inserted at the end of its main().",
        "",
        "Ember runs twice on the CPU: as `Network.run` chooses (its native C kernels where the network "
        "supports them, otherwise PyTorch; the notes say which) and with the PyTorch engine forced. The "
        "summary compares the faster of the two.",
        "",
        "Units: W1 reports seconds per sample (250 steps of one sample; with a batch, the batch's time divided "
        "by its size); W2 and W3 report seconds per 1000 steps of the whole batch. Sample-steps per second "
        "counts steps times batch size.",
        "",
    ]


def _service_section(service: dict[str, Any] | None) -> list[str]:
    """Describe the S1 measurement: the same job through ``ember serve`` and ``ember run``."""
    if service is None or service.get("status") != "ok":
        return []
    overhead = 100.0 * (service["overhead_ratio"] - 1.0)
    return [
        "## S1: service overhead",
        "",
        f"The quick Diehl & Cook job with {service['train_samples']} training images, timed "
        f"{service['repeats']} time(s) each way (minimum reported). `ember run` counts the whole process, "
        "imports and data loading included; `ember serve` counts from the submit request to the first poll "
        "that sees the job succeeded, with the server already running.",
        "",
        "| path | wall time (s) | accuracy |",
        "|---|---|---|",
        f"| `ember run` | {service['run_s']:.2f} | {service['run_accuracy']} |",
        f"| `ember serve` (REST, embedded worker) | {service['serve_s']:.2f} | {service['serve_accuracy']} |",
        "",
        f"The service takes {overhead:+.1f} % against the local run."
        + (
            " The service was faster: `ember run` also counts starting a process and importing Ember and "
            "PyTorch, which the running server did before the submit."
            if overhead < 0
            else ""
        ),
        "",
    ]


def write_report(run: dict[str, Any]) -> str:
    """Return BENCHMARKS.md for a run (see the module docstring for the run's layout)."""
    results = run["results"]
    lines = _header(run["meta"])
    lines += _summary_section(results)
    lines += _targets_section(results, run.get("service"))
    lines += ["## Results", "", OUTPUT_RATE_NOTE, ""]
    for workload in ("W1", "W2", "W3"):
        lines += _detail_section(results, workload)
    lines += _service_section(run.get("service"))
    lines += _not_measured_section(results, run.get("envs", {}), run.get("service"))
    lines += _roofline_section(results, run["meta"]["bandwidth"])
    lines += _differences_section(run.get("differences", {}))
    lines += _versions_section(results, run.get("envs", {}))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write BENCHMARKS.md from a saved benchmark run.")
    parser.add_argument("run", type=Path, help="the JSON file that benchmarks.run saved")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"), help="where to write the report")
    parser.add_argument("--merge", type=Path, action="append", default=[], help="a later run whose cases replace those of RUN (repeatable)")
    parser.add_argument("--reason", action="append", default=[], help="why each later run measured its cases again, in the order of --merge")
    arguments = parser.parse_args(argv)
    if len(arguments.reason) not in (0, len(arguments.merge)):
        parser.error(f"give one --reason per --merge: {len(arguments.merge)} runs, {len(arguments.reason)} reasons")
    run = json.loads(arguments.run.read_text(encoding="utf-8"))
    for k, path in enumerate(arguments.merge):
        reason = arguments.reason[k] if arguments.reason else "a change to Ember"
        run = merge_runs(run, json.loads(path.read_text(encoding="utf-8")), reason)
    arguments.output.write_text(write_report(run), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
