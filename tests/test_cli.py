"""The ember command line: run, validate, schema, exit codes and Ctrl-C resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ember.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main
from ember.results import DirectoryStore
from ember.runner import run_job
from ember.spec import validate_spec

REPO = Path(__file__).resolve().parents[1]


def simulation(duration_ms: float = 200.0) -> dict:
    return {
        "kind": "simulate",
        "duration_ms": duration_ms,
        "dt": 1.0,
        "seed": 5,
        "device": "cpu",
        "network": {
            "inputs": {"noise": {"type": "background", "shape": [30], "rate_hz": 30.0}},
            "populations": {"cells": {"type": "lif", "shape": [6], "tau_mem": 10.0}},
            "connections": {"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 5.0}},
            "monitors": {"raster": {"type": "spikes", "target": "cells"}},
        },
    }


def write_spec(tmp_path: Path, document: dict, name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def run_ember(*args: str, **kwargs) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ember", *args], capture_output=True, text=True, env=environment, timeout=120, **kwargs
    )


def test_schema_prints_json_schema(capsys):
    assert main(["schema"]) == EXIT_OK
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "JobSpec"
    assert "network" in schema["properties"]


def test_validate_prints_estimate(tmp_path, capsys):
    path = write_spec(tmp_path, simulation())
    assert main(["validate", str(path)]) == EXIT_OK
    output = capsys.readouterr().out
    assert "valid simulate job" in output
    assert "neurons:  36" in output
    assert "synapses: 180" in output
    assert "steps:    200" in output
    assert "memory:" in output and "time:" in output


def test_validate_reports_paths_and_rules(tmp_path, capsys):
    document = simulation()
    document["network"]["populations"]["cells"]["tau"] = 3.0
    document["dt"] = "1"
    path = write_spec(tmp_path, document)
    assert main(["validate", str(path)]) == EXIT_FAILED
    error = capsys.readouterr().err
    assert "$.network.populations.cells.tau" in error
    assert "[extra_forbidden]" in error
    assert "$.dt" in error and "[float_type]" in error


def test_validate_json_report(tmp_path, capsys):
    document = simulation()
    document["network"]["connections"]["drive"]["post"] = "nobody"
    path = write_spec(tmp_path, document)
    assert main(["validate", "--json", str(path)]) == EXIT_FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert report["errors"] == [
        {
            "path": "$.network.connections.drive.post",
            "rule": "unknown_population",
            "message": "post 'nobody' is not a population of this network",
            "value": "nobody",
        }
    ]
    valid = write_spec(tmp_path, simulation(), "valid.json")
    assert main(["validate", "--json", str(valid)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["estimate"]["steps"] == 200


def test_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.json")]) == EXIT_FAILED
    assert "cannot read spec" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == EXIT_USAGE


def test_run_writes_result_layout(tmp_path):
    spec = write_spec(tmp_path, simulation())
    out = tmp_path / "out"
    result = run_ember("run", str(spec), "--out", str(out), "--threads", "1")
    assert result.returncode == EXIT_OK, result.stderr
    assert "done: results in" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 200
    assert (out / "parameters.safetensors").exists()
    assert (out / "checkpoint.json").exists()
    assert (out / "artifacts" / "spec.json").exists()
    assert (out / "plots" / "raster_raster.png").read_bytes()[:4] == b"\x89PNG"
    with np.load(out / "spikes" / "raster.npz", allow_pickle=False) as data:
        assert len(data["step"]) > 0
    # The progress bar counts steps for a simulation without data.
    assert "step/s" in result.stderr
    assert "job: simulate" in result.stderr


def test_run_invalid_spec_fails(tmp_path, capsys):
    document = simulation()
    document["kind"] = "train"
    assert main(["run", str(write_spec(tmp_path, document)), "--out", str(tmp_path / "out")]) == EXIT_FAILED
    assert "data_required" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_interrupt_saves_checkpoint_and_rerun_resumes(tmp_path):
    document = simulation(duration_ms=12000.0)
    spec = write_spec(tmp_path, document)
    out = tmp_path / "out"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ember", "run", str(spec), "--out", str(out), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    # Wait for the first progress report, then press Ctrl-C once.
    deadline = time.monotonic() + 60
    buffer = ""
    while "step/s" not in buffer and time.monotonic() < deadline:
        character = process.stderr.read(1)
        if not character:
            break
        buffer += character
    process.send_signal(signal.SIGINT)
    _, remaining = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED, buffer + remaining
    assert "Run the same command again to resume" in remaining
    assert (out / "checkpoint.json").exists()
    assert not (out / "metrics.json").exists()

    resumed = run_ember("run", str(spec), "--out", str(out), "--threads", "1", "--quiet")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    resumed_metrics = json.loads((out / "metrics.json").read_text())
    assert resumed_metrics["steps"] == 12000

    reference = run_job(validate_spec(document), DirectoryStore(tmp_path / "reference"))
    assert resumed_metrics["firing_rate_hz"] == reference["firing_rate_hz"]


def test_fresh_discards_checkpoint_of_other_spec(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["run", str(write_spec(tmp_path, simulation())), "--out", out, "--quiet"]) == EXIT_OK
    other = simulation()
    other["seed"] = 6
    path = str(write_spec(tmp_path, other, "other.json"))
    capsys.readouterr()
    assert main(["run", path, "--out", out, "--quiet"]) == EXIT_FAILED
    assert "different job spec" in capsys.readouterr().err
    assert main(["run", path, "--out", out, "--quiet", "--fresh"]) == EXIT_OK
    assert json.loads((tmp_path / "out" / "artifacts" / "spec.json").read_text())["seed"] == 6


@pytest.mark.parametrize("argv", [["run", "x.json"], ["run", "x.json", "--out", "o", "--threads", "0"]])
def test_bad_arguments_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
