"""Job spec validation: JSON paths and rules of errors, limits, estimates and the schema."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import pytest
import torch

import ember.neurons
from ember.builder import build_network
from ember.native import runner as native_runner
from ember.spec import JobSpec, Limits, SpecError, estimate, job_schema, load_spec, validate_spec
from ember.spec.estimate import native_unsupported_reason
from ember.spec.populations import POPULATION_SPECS

EXAMPLES = Path(__file__).resolve().parents[1] / "api_examples"


def small_job() -> dict:
    """A valid simulate job: 10 background inputs drive 5 LIF neurons for 100 ms."""
    return {
        "kind": "simulate",
        "duration_ms": 100.0,
        "dt": 1.0,
        "network": {
            "inputs": {"noise": {"type": "background", "shape": [10], "rate_hz": 20.0}},
            "populations": {"cells": {"type": "lif", "shape": [5]}},
            "connections": {"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 4.0}},
        },
    }


def issues_of(document: dict, **kwargs) -> list:
    with pytest.raises(SpecError) as caught:
        validate_spec(document, **kwargs)
    return caught.value.issues


def only_issue(document: dict, **kwargs):
    issues = issues_of(document, **kwargs)
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


def test_valid_spec_defaults():
    spec = validate_spec(small_job())
    assert spec.network.populations["cells"].tau_mem == 20.0
    assert spec.network.connections["drive"].weight.type == "constant"
    assert spec.network.connections["drive"].weight.value == 4.0
    assert spec.network.connections["drive"].synapse.type == "delta"


def test_unknown_field_names_path_and_rule():
    document = small_job()
    document["network"]["populations"]["cells"]["tau"] = 5.0
    issue = only_issue(document)
    assert issue.path == "$.network.populations.cells.tau"
    assert issue.rule == "extra_forbidden"
    assert "tau" in issue.message


def test_unknown_top_level_field():
    document = small_job()
    document["epoch"] = 3
    issue = only_issue(document)
    assert issue.path == "$.epoch"
    assert issue.rule == "extra_forbidden"


def test_wrong_type_is_not_coerced():
    document = small_job()
    document["network"]["inputs"]["noise"]["rate_hz"] = "20"
    issue = only_issue(document)
    assert issue.path == "$.network.inputs.noise.rate_hz"
    assert issue.rule == "float_type"
    assert issue.value == "20"


def test_boolean_is_not_a_number():
    document = small_job()
    document["dt"] = True
    issue = only_issue(document)
    assert issue.path == "$.dt"
    assert issue.rule == "float_type"


def test_unknown_model_type_points_at_type():
    document = small_job()
    document["network"]["populations"]["cells"]["type"] = "lifx"
    issue = only_issue(document)
    assert issue.path == "$.network.populations.cells.type"
    assert issue.rule == "union_tag_invalid"
    assert "'adaptive_lif'" in issue.message


def test_range_rule_in_nested_union():
    document = small_job()
    document["network"]["connections"]["drive"]["weight"] = {"type": "normal", "mean": 1.0, "std": -1.0}
    issue = only_issue(document)
    assert issue.path == "$.network.connections.drive.weight.std"
    assert issue.rule == "greater_than_equal"
    assert issue.message == "std must be at least 0"
    assert issue.value == -1.0


def test_stop_below_error_at_its_field():
    document = small_job()
    document["network"]["connections"]["drive"]["delay"] = {"init": 2.0, "max_ms": 5.0}
    document["network"]["connections"]["drive"]["learning"] = [
        {"type": "delay_adjusted_stdp", "b_minus": 1.0, "stop_below": 0.5}
    ]
    issue = only_issue(document)
    assert issue.path == "$.network.connections.drive.learning[0].stop_below"
    assert issue.rule == "stop_below_not_above_b_minus"
    assert "raise stop_below or lower b_minus" in issue.message
    assert issue.value == 0.5


def test_missing_field_path():
    document = small_job()
    del document["network"]["inputs"]["noise"]["rate_hz"]
    issue = only_issue(document)
    assert issue.path == "$.network.inputs.noise.rate_hz"
    assert issue.rule == "missing"


def test_several_errors_reported_together():
    document = small_job()
    document["network"]["populations"]["cells"]["tau_mem"] = -1.0
    document["network"]["inputs"]["noise"]["rate_hz"] = "x"
    paths = {issue.path for issue in issues_of(document)}
    assert paths == {"$.network.populations.cells.tau_mem", "$.network.inputs.noise.rate_hz"}


def test_unknown_node_reference():
    document = small_job()
    document["network"]["connections"]["drive"]["pre"] = "nois"
    issue = only_issue(document)
    assert issue.path == "$.network.connections.drive.pre"
    assert issue.rule == "unknown_node"
    assert issue.value == "nois"


def test_connection_into_input_rejected():
    document = small_job()
    document["network"]["connections"]["back"] = {"type": "dense", "pre": "cells", "post": "noise", "weight": 1.0}
    issue = only_issue(document)
    assert issue.path == "$.network.connections.back.post"
    assert issue.rule == "unknown_population"


def test_duplicate_name_across_groups():
    document = small_job()
    document["network"]["monitors"] = {"cells": {"type": "spikes", "target": "cells"}}
    issue = only_issue(document)
    assert issue.path == "$.network.monitors.cells"
    assert issue.rule == "duplicate_name"


def test_conv2d_shape_mismatch():
    document = small_job()
    document["network"]["inputs"]["grid"] = {"type": "background", "shape": [1, 13, 13], "rate_hz": 1.0}
    document["network"]["populations"]["maps"] = {"type": "lif", "shape": [4, 8, 8]}
    document["network"]["connections"]["conv"] = {
        "type": "conv2d", "pre": "grid", "post": "maps", "kernel_size": 5, "weight": 0.5,
    }
    issue = only_issue(document)
    assert issue.path == "$.network.connections.conv.type"
    assert issue.rule == "shape_mismatch"
    assert "[4, 9, 9]" in issue.message


def test_cycle_without_delay_rejected():
    document = small_job()
    document["network"]["populations"]["other"] = {"type": "lif", "shape": [5]}
    connections = document["network"]["connections"]
    connections["ahead"] = {"type": "one_to_one", "pre": "cells", "post": "other", "weight": 1.0}
    connections["back"] = {"type": "one_to_one", "pre": "other", "post": "cells", "weight": 1.0}
    issue = only_issue(document)
    assert issue.rule == "cycle_without_delay"
    assert "ahead" in issue.message
    assert "back" in issue.message


def test_cycle_with_one_step_delay_accepted():
    document = small_job()
    document["network"]["populations"]["other"] = {"type": "lif", "shape": [5]}
    connections = document["network"]["connections"]
    connections["ahead"] = {"type": "one_to_one", "pre": "cells", "post": "other", "weight": 1.0}
    connections["back"] = {
        "type": "one_to_one", "pre": "other", "post": "cells", "weight": 1.0,
        "delay": {"init": 1.0, "min_ms": 1.0},
    }
    validate_spec(document)


def test_lateral_defaults_to_one_step():
    document = small_job()
    document["network"]["connections"]["inhibition"] = {
        "type": "lateral", "pre": "cells", "post": "cells", "weight": -1.0,
    }
    validate_spec(document)
    document["network"]["connections"]["inhibition"]["delay"] = {"init": 0.0}
    assert only_issue(document).rule == "cycle_without_delay"


def delayed_job(delay) -> dict:
    """The small job with ``delay`` on its one connection."""
    document = small_job()
    document["network"]["connections"]["drive"]["delay"] = delay
    return document


DELAY_PATH = "$.network.connections.drive.delay"


@pytest.mark.parametrize("min_ms", [0.0, 1.0])
def test_negative_delay_rejected_for_any_min_ms(min_ms):
    issue = only_issue(delayed_job({"init": -2, "min_ms": min_ms}))
    assert issue.path == f"{DELAY_PATH}.init"
    assert issue.rule == "delay_negative"
    assert issue.value == -2.0
    assert "at least 0 ms" in issue.message
    assert f"set init to at least {min_ms:g} ms" in issue.message


def test_negative_delay_object_points_at_value():
    issue = only_issue(delayed_job({"init": {"type": "constant", "value": -2.0}, "min_ms": 1.0}))
    assert issue.path == f"{DELAY_PATH}.init.value"
    assert issue.rule == "delay_negative"
    assert "min_ms = 1 ms" in issue.message


@pytest.mark.parametrize(
    ("init", "field", "lowest"),
    [
        (0.5, "", 0.5),
        ({"type": "uniform", "low": 0.5, "high": 3.0}, ".low", 0.5),
        ({"type": "normal", "mean": 0.8, "std": 0.2}, ".mean", 0.8),
        ({"type": "normal", "mean": 2.0, "std": 0.2, "min": 0.5}, ".min", 0.5),
    ],
    ids=["constant", "uniform", "normal_mean", "normal_min"],
)
def test_delay_below_min_ms_rejected(init, field, lowest):
    issue = only_issue(delayed_job({"init": init, "min_ms": 1.0, "max_ms": 4.0}))
    assert issue.path == f"{DELAY_PATH}.init{field}"
    assert issue.rule == "delay_below_min_ms"
    assert issue.value == lowest
    assert "min_ms = 1 ms" in issue.message
    assert "or lower min_ms" in issue.message


def test_delay_at_min_ms_accepted():
    uniform = validate_spec(delayed_job({"init": {"type": "uniform", "low": 1.0, "high": 3.0}, "min_ms": 1.0}))
    assert uniform.network.connections["drive"].delay.min_ms == 1.0
    # The tail of a normal initialiser below min_ms is clipped to min_ms by design.
    normal = validate_spec(delayed_job({"init": {"type": "normal", "mean": 1.5, "std": 1.0}, "min_ms": 1.0, "max_ms": 4.0}))
    assert normal.network.connections["drive"].delay.init.mean == 1.5


def test_bare_number_delay_suggests_object():
    issue = only_issue(delayed_job(-2))
    assert issue.path == DELAY_PATH
    assert issue.rule == "model_type"
    assert issue.value == -2
    assert "got the number -2" in issue.message
    assert '{"init": {"type": "constant", "value": 2.0}}' in issue.message
    assert "or null for no delay" in issue.message


def test_suggested_delay_forms_are_valid():
    for delay in ({"init": 2.0}, {"init": {"type": "constant", "value": 2.0}}):
        spec = validate_spec(delayed_job(delay))
        assert spec.network.connections["drive"].delay.init.value == 2.0


def test_unknown_dataset_value_is_the_tag():
    document = small_job()
    document["data"] = {"dataset": "mnist60k"}
    issue = only_issue(document)
    assert issue.path == "$.data.dataset"
    assert issue.rule == "union_tag_invalid"
    assert issue.value == "mnist60k"


def test_durations_must_be_whole_steps():
    document = small_job()
    document["duration_ms"] = 100.5
    issue = only_issue(document)
    assert issue.path == "$.duration_ms"
    assert issue.rule == "whole_steps"


def test_train_job_needs_data_and_learning():
    document = small_job()
    document["kind"] = "train"
    rules = {issue.rule for issue in issues_of(document)}
    assert rules == {"data_required", "learning_required"}


def test_delay_rule_needs_delays():
    document = small_job()
    document["network"]["connections"]["drive"]["learning"] = [{"type": "delay_adjusted_stdp"}]
    issue = only_issue(document)
    assert issue.path == "$.network.connections.drive.learning[0].type"
    assert issue.rule == "delays_required"


def test_oversized_network_rejected_with_limit_and_value():
    document = small_job()
    document["network"]["populations"]["cells"]["shape"] = [100_000, 1_000]
    document["network"]["connections"] = {}
    issue = only_issue(document)
    assert issue.path == "$.network.populations"
    assert issue.rule == "limit_exceeded"
    assert issue.value == 100_000_010
    assert "100,000,010 neurons" in issue.message
    assert "10,000,000" in issue.message
    assert "EMBER_MAX_NEURONS" in issue.message


def test_synapse_limit_from_context():
    issue = only_issue(small_job(), limits=Limits(max_synapses=49))
    assert issue.rule == "limit_exceeded"
    assert issue.path == "$.network.connections"
    assert issue.value == 50
    validate_spec(small_job(), limits=Limits(max_synapses=50))


def test_limit_from_environment(monkeypatch):
    monkeypatch.setenv("EMBER_MAX_STEPS", "99")
    issue = only_issue(small_job())
    assert issue.path == "$.epochs"
    assert issue.value == 100
    assert "above the limit of 99" in issue.message


def test_memory_limit():
    issue = only_issue(small_job(), limits=Limits(max_memory_bytes=100))
    assert issue.rule == "limit_exceeded"
    assert "memory" in issue.message


def test_estimate_counts():
    estimate = validate_spec(small_job()).estimate()
    assert estimate.neurons == 15
    assert estimate.synapses == 50
    assert estimate.steps == 100
    assert estimate.samples == 0
    # 50 float32 weights plus one float32 threshold per unit.
    assert estimate.memory["parameters"] == 50 * 4 + 15 * 4
    assert estimate.bytes == sum(estimate.memory.values())
    assert estimate.seconds > 0


def test_estimate_of_data_job():
    document = small_job()
    document.pop("duration_ms")
    document.update(
        kind="evaluate",
        presentation_ms=20.0,
        rest_ms=5.0,
        batch_size=4,
        eval_batch_size=8,
        data={"dataset": "digits", "train_samples": 20, "test_samples": 10},
        readout={"type": "max_rate_labels", "population": "cells"},
    )
    document["network"]["inputs"]["pixels"] = {"type": "poisson", "shape": [64], "max_rate_hz": 50.0}
    estimate = validate_spec(document).estimate()
    assert estimate.samples == 30
    # ceil(20 / 8) + ceil(10 / 8) batches of 25 steps.
    assert estimate.steps == (3 + 2) * 25


def test_conv2d_and_sparse_synapse_counts():
    document = small_job()
    document["network"]["inputs"]["grid"] = {"type": "background", "shape": [1, 13, 13], "rate_hz": 1.0}
    document["network"]["populations"]["maps"] = {"type": "lif", "shape": [4, 9, 9]}
    connections = document["network"]["connections"]
    connections["conv"] = {"type": "conv2d", "pre": "grid", "post": "maps", "kernel_size": 5, "weight": 0.5}
    connections["between"] = {
        "type": "lateral", "neighbourhood": "same_position", "pre": "maps", "post": "maps", "weight": -5.0,
    }
    connections["random"] = {"type": "sparse", "pre": "noise", "post": "cells", "probability": 0.5, "weight": 1.0}
    estimate = validate_spec(document).estimate()
    # dense 10x5, kernel 4x1x5x5, 4 maps x 81 positions x 3 other maps, half of 10x5.
    assert estimate.synapses == 50 + 100 + 4 * 81 * 3 + 25


def test_population_defaults_match_neuron_classes():
    for type_name, spec_class in POPULATION_SPECS.items():
        neuron_class = getattr(ember.neurons, spec_class.neuron_class)
        parameters = inspect.signature(neuron_class.__init__).parameters
        instance = spec_class.model_validate({"type": type_name, "shape": [1]})
        for name, value in instance.constructor_arguments().items():
            assert name in parameters, f"{type_name}: {name} is not an argument of {neuron_class.__name__}"
            default = parameters[name].default
            if name != "trainable":
                assert value == default, f"{type_name}.{name}: spec default {value!r}, class default {default!r}"


def test_trainable_names_checked():
    document = small_job()
    document["network"]["populations"]["cells"]["trainable"] = ["tau"]
    issue = only_issue(document)
    assert issue.path == "$.network.populations.cells.trainable"
    assert "tau_mem" in issue.message


def test_fingerprint_ignores_presentation_details():
    first = validate_spec(small_job())
    document = small_job()
    document.update(name="renamed", device="cpu", checkpoint_every=5, tags=["x"])
    assert validate_spec(document).fingerprint() == first.fingerprint()
    document["seed"] = 1
    assert validate_spec(document).fingerprint() != first.fingerprint()


def test_spec_round_trips_through_json():
    spec = validate_spec(small_job())
    again = JobSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec


def test_load_spec_reports_bad_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"kind": ')
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.issues[0].rule == "json_invalid"
    assert caught.value.issues[0].path == "$"


def test_schema_describes_jobs():
    schema = job_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]["kind"]["enum"]) == {"simulate", "train", "evaluate", "train_evaluate"}
    assert schema["additionalProperties"] is False
    network = schema["$defs"]["NetworkSpec"]
    population_union = network["properties"]["populations"]["additionalProperties"]
    assert population_union["discriminator"]["propertyName"] == "type"
    assert set(population_union["discriminator"]["mapping"]) == set(POPULATION_SPECS)
    json.dumps(schema)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda path: path.stem)
def test_reference_specs_validate(path):
    spec = load_spec(path)
    assert spec.estimate().steps > 0


def test_reference_specs_exist():
    names = {path.stem for path in EXAMPLES.glob("*.json")}
    assert {
        "diehl_cook_mnist",
        "diehl_cook_quick",
        "diehl_cook_delays",
        "delay_learning_pattern",
        "delay_learning_rdk",
    } <= names


def test_documents_are_not_modified():
    document = small_job()
    original = copy.deepcopy(document)
    validate_spec(document)
    assert document == original


def test_names_of_module_methods_accepted():
    from ember.builder import build_network

    document = small_job()
    document["network"]["connections"]["forward"] = document["network"]["connections"].pop("drive")
    spec = validate_spec(document)
    built = build_network(spec)
    network = getattr(built, "network", built)
    assert "forward" in network.connections


def retry_job(**retry) -> dict:
    """An evaluate job on the digits with Poisson pixels and a low-activity retry on ``cells``."""
    document = small_job()
    document.pop("duration_ms")
    document.update(
        kind="evaluate",
        data={"dataset": "digits", "train_samples": 20, "test_samples": 10},
        readout={"type": "max_rate_labels", "population": "cells"},
        low_activity_retry={"population": "cells", "min_spikes": 5, "rate_increase_hz": 32.0, "max_retries": 5, **retry},
    )
    document["network"]["inputs"]["pixels"] = {"type": "poisson", "shape": [64], "max_rate_hz": 50.0}
    return document


def test_low_activity_retry_fields():
    spec = validate_spec(retry_job())
    assert spec.low_activity_retry.rate_increase_hz == 32.0
    issue = only_issue(retry_job(population="nobody"))
    assert (issue.path, issue.rule) == ("$.low_activity_retry.population", "unknown_population")
    assert "cells" in issue.message
    issue = only_issue(retry_job(rate_increase_hz=0.0))
    assert (issue.path, issue.rule) == ("$.low_activity_retry.rate_increase_hz", "greater_than")
    issue = only_issue(retry_job(max_retries=0))
    assert issue.path == "$.low_activity_retry.max_retries"
    issue = only_issue(retry_job(min_spikes=0))
    assert issue.path == "$.low_activity_retry.min_spikes"


def test_low_activity_retry_needs_poisson_data_input():
    document = retry_job()
    document["network"]["inputs"]["pixels"] = {"type": "latency", "shape": [64], "window_ms": 10.0}
    issue = only_issue(document)
    assert (issue.path, issue.rule) == ("$.low_activity_retry", "poisson_input_required")
    document = small_job()
    document["low_activity_retry"] = {"population": "cells", "rate_increase_hz": 32.0}
    issue = only_issue(document)
    assert (issue.path, issue.rule) == ("$.low_activity_retry", "data_required")


def test_fingerprint_without_retry_is_unchanged():
    import hashlib

    document = retry_job()
    document.pop("low_activity_retry")
    spec = validate_spec(document)
    # The fingerprint of a spec without the option is that of the spec before the option existed.
    dump = spec.model_dump(mode="json", exclude={"name", "tags", "device", "checkpoint_every", "record", "low_activity_retry"})
    assert spec.fingerprint() == hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()
    assert validate_spec(retry_job()).fingerprint() != spec.fingerprint()
    assert validate_spec(retry_job(min_spikes=6)).fingerprint() != validate_spec(retry_job()).fingerprint()


# --------------------------------------------------------------------------- time estimate: engines


def engine_job(**network_changes) -> dict:
    """A simulate job on the CPU whose network the native kernels run: 6 background inputs into 4 LIF neurons."""
    document = {
        "kind": "simulate",
        "duration_ms": 50.0,
        "dt": 1.0,
        "device": "cpu",
        "network": {
            "inputs": {"noise": {"type": "background", "shape": [6], "rate_hz": 40.0}},
            "populations": {"cells": {"type": "lif", "shape": [4]}},
            "connections": {"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 3.0}},
        },
    }
    for section, parts in network_changes.items():
        document["network"].setdefault(section, {}).update(parts)
    return document


def with_rule(rule: dict, **connection) -> dict:
    """``engine_job`` whose connection ``drive`` learns with ``rule``, with extra connection fields."""
    drive = {"type": "dense", "pre": "noise", "post": "cells", "weight": 3.0, "learning": [rule], **connection}
    return engine_job(connections={"drive": drive})


# (case, document, native while learning, native with learning off)
NATIVE_CASES = [
    ("lif", engine_job(), True, True),
    ("adaptive_lif", engine_job(populations={"cells": {"type": "adaptive_lif", "shape": [4]}}), True, True),
    ("izhikevich", engine_job(populations={"cells": {"type": "izhikevich", "shape": [4]}}), False, False),
    ("state_monitor", engine_job(monitors={"v": {"type": "state", "target": "cells"}}), False, False),
    ("spike_monitor", engine_job(monitors={"s": {"type": "spikes", "target": "cells"}}), True, True),
    (
        "spike_times_input",
        engine_job(inputs={"noise": {"type": "spike_times", "shape": [6], "times_ms": [1.0, 5.0], "indices": [0, 3]}}),
        True,
        True,
    ),
    (
        "conductance_synapse",
        engine_job(connections={"drive": {"type": "dense", "pre": "noise", "post": "cells", "weight": 0.1, "synapse": {"type": "conductance", "tau_syn": 5.0, "e_rev": 0.0}}}),
        True,
        True,
    ),
    ("sparse", engine_job(connections={"drive": {"type": "sparse", "pre": "noise", "post": "cells", "weight": 3.0, "probability": 0.5}}), False, False),
    (
        "conv2d",
        engine_job(
            inputs={"noise": {"type": "background", "shape": [1, 4, 4], "rate_hz": 40.0}},
            populations={"cells": {"type": "lif", "shape": [2, 3, 3]}},
            connections={"drive": {"type": "conv2d", "pre": "noise", "post": "cells", "weight": 3.0, "kernel_size": 2}},
        ),
        False,
        False,
    ),
    (
        "one_to_one",
        engine_job(connections={"drive": {"type": "one_to_one", "pre": "noise", "post": "cells", "weight": 3.0}}, populations={"cells": {"type": "lif", "shape": [6]}}),
        True,
        True,
    ),
    ("lateral", engine_job(connections={"inhibit": {"type": "lateral", "pre": "cells", "post": "cells", "weight": -1.0}}), True, True),
    (
        "lateral_same_position",
        engine_job(
            populations={"cells": {"type": "lif", "shape": [2, 2]}},
            connections={"inhibit": {"type": "lateral", "pre": "cells", "post": "cells", "weight": -1.0, "neighbourhood": "same_position"}},
        ),
        False,
        False,
    ),
    (
        "exclude_matching_with_delay",
        engine_job(
            populations={"cells": {"type": "lif", "shape": [4]}, "other": {"type": "lif", "shape": [4]}},
            connections={"cross": {"type": "dense", "pre": "cells", "post": "other", "weight": -1.0, "exclude_matching": True, "delay": {"init": 1.0, "min_ms": 1.0}}},
        ),
        True,
        True,
    ),
    (
        "exclude_matching_without_delay",
        engine_job(
            populations={"cells": {"type": "lif", "shape": [4]}, "other": {"type": "lif", "shape": [4]}},
            connections={"cross": {"type": "dense", "pre": "cells", "post": "other", "weight": -1.0, "exclude_matching": True}},
        ),
        False,
        False,
    ),
    ("stdp_emission", with_rule({"type": "stdp", "timing": "emission"}), True, True),
    ("stdp_arrival_no_delay", with_rule({"type": "stdp"}), True, True),
    ("stdp_arrival_whole_delays", with_rule({"type": "stdp"}, delay={"init": 2.0}), True, True),
    ("stdp_arrival_fractional_delays", with_rule({"type": "stdp"}, delay={"init": {"type": "uniform", "low": 1.0, "high": 3.0}}), False, True),
    (
        "stdp_arrival_rounded_delays",
        with_rule({"type": "stdp"}, delay={"init": {"type": "uniform", "low": 1.0, "high": 3.0}, "mode": "nearest"}),
        True,
        True,
    ),
    # Arrival timing keeps 2 words of 24 steps of history: delays up to 47 steps (horizon 48).
    ("stdp_arrival_47_step_delays", with_rule({"type": "stdp"}, delay={"init": 47.0}), True, True),
    ("stdp_arrival_48_step_delays", with_rule({"type": "stdp"}, delay={"init": 48.0}), False, True),
    (
        "stdp_on_lateral",
        engine_job(connections={"inhibit": {"type": "lateral", "pre": "cells", "post": "cells", "weight": -1.0, "learning": [{"type": "stdp"}]}}),
        True,
        True,
    ),
    (
        "diehl_cook_on_lateral",
        engine_job(connections={"inhibit": {"type": "lateral", "pre": "cells", "post": "cells", "weight": -1.0, "learning": [{"type": "diehl_cook_stdp"}]}}),
        False,
        True,
    ),
    ("stdp_soft_bounds", with_rule({"type": "stdp", "bound": "soft"}, w_min=0.0, w_max=5.0), True, True),
    ("stdp_power_bounds", with_rule({"type": "stdp", "bound": "power"}, w_min=0.0, w_max=5.0), False, True),
    ("diehl_cook_arrival_delays", with_rule({"type": "diehl_cook_stdp"}, delay={"init": 2.0}), False, True),
    ("diehl_cook_emission_delays", with_rule({"type": "diehl_cook_stdp", "timing": "emission"}, delay={"init": 2.0}), True, True),
    ("weight_normalization", with_rule({"type": "weight_normalization", "target_sum": 10.0}), True, True),
    ("weight_normalization_interval", with_rule({"type": "weight_normalization", "target_sum": 10.0, "interval": 10.0}), False, True),
    ("triplet_stdp", with_rule({"type": "triplet_stdp"}), False, True),
    ("homeostasis", with_rule({"type": "homeostasis", "target_rate": 5.0, "eta": 0.1}), False, True),
    (
        "stdp_on_one_to_one",
        engine_job(
            populations={"cells": {"type": "lif", "shape": [6]}},
            connections={"drive": {"type": "one_to_one", "pre": "noise", "post": "cells", "weight": 3.0, "learning": [{"type": "stdp"}]}},
        ),
        False,
        True,
    ),
]


@pytest.mark.parametrize(("document", "learning_native", "plain_native"), [case[1:] for case in NATIVE_CASES], ids=[case[0] for case in NATIVE_CASES])
def test_native_reason_of_spec(document, learning_native, plain_native):
    spec = validate_spec(document)
    learning_reason = native_unsupported_reason(spec, learning=True)
    plain_reason = native_unsupported_reason(spec, learning=False)
    assert (learning_reason is None) == learning_native, learning_reason
    assert (plain_reason is None) == plain_native, plain_reason


@pytest.mark.skipif(native_runner.kernels() is None, reason="no C compiler for the native kernels")
@pytest.mark.parametrize("document", [case[1] for case in NATIVE_CASES], ids=[case[0] for case in NATIVE_CASES])
def test_native_reason_matches_plan(document):
    """The spec-level decision agrees with the checks of ember.native.plan on the built network."""
    spec = validate_spec(document)
    built = build_network(spec, batch_size=1)
    network = built.network
    for name, input_spec in spec.network.inputs.items():
        if input_spec.type == "background":
            network.nodes[name].set_data(torch.full((1, *input_spec.shape), input_spec.rate_hz))
    for learning in (True, False):
        network.learning(learning)
        plan_reason = native_runner.unsupported_reason(network)
        spec_reason = native_unsupported_reason(spec, learning=learning)
        assert (plan_reason is None) == (spec_reason is None), (learning, plan_reason, spec_reason)


def test_native_reason_follows_device(monkeypatch):
    document = engine_job()
    assert "CUDA" in native_unsupported_reason(validate_spec(dict(document, device="cuda")), learning=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert native_unsupported_reason(validate_spec(dict(document, device="auto")), learning=False) is not None
    assert native_unsupported_reason(validate_spec(dict(document, device="cpu")), learning=False) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert native_unsupported_reason(validate_spec(dict(document, device="auto")), learning=False) is None


def native_simulate_seconds(steps: int, neurons: int, drawn_units: int, events_per_sample_step: float) -> float:
    """The native model of a one-sample simulate job of fewer than 1000 steps (one run call), plus the job overhead."""
    python = estimate.NATIVE_BATCH_S + estimate.NATIVE_CALL_S + estimate.NATIVE_SAMPLE_S
    sample_cost = estimate.NATIVE_UNIT_S * (neurons + drawn_units) + estimate.NATIVE_EVENT_S * events_per_sample_step
    return estimate.JOB_OVERHEAD_S + python + steps * (estimate.NATIVE_STEP_S + sample_cost)


def test_estimate_native_model_for_native_spec():
    spec = validate_spec(engine_job())
    assert native_unsupported_reason(spec, learning=False) is None
    # 6 inputs at 40 Hz, so 0.04 spikes per step, each reaching 4 synapses.
    expected = native_simulate_seconds(50, neurons=4, drawn_units=6, events_per_sample_step=6 * 0.04 * 4)
    assert spec.estimate().seconds == pytest.approx(expected, rel=1e-9)


def test_estimate_torch_model_for_unsupported_spec():
    spec = validate_spec(engine_job(monitors={"v": {"type": "state", "target": "cells"}}))
    assert "monitor 'v'" in native_unsupported_reason(spec, learning=False)
    # 2 modules per node and connection and 1 per monitor, 24 synapses, one sample.
    modules = 2 * 2 + 2 * 1 + 1
    expected = estimate.JOB_OVERHEAD_S + 50 * (modules * estimate.STEP_OVERHEAD_S["cpu"] + 24 * 1 * estimate.SYNAPSE_COST_S["cpu"])
    assert spec.estimate().seconds == pytest.approx(expected, rel=1e-9)


def test_estimate_on_cuda_uses_torch_model():
    spec = validate_spec(dict(engine_job(), device="cuda"))
    modules = 2 * 2 + 2 * 1
    expected = estimate.JOB_OVERHEAD_S + 50 * (modules * estimate.STEP_OVERHEAD_S["cuda"] + 24 * estimate.SYNAPSE_COST_S["cuda"])
    assert spec.estimate().seconds == pytest.approx(expected, rel=1e-9)


def test_estimate_picks_engine_per_phase():
    """Triplet STDP keeps training on PyTorch, and labelling and testing run natively with the rules off."""
    document = engine_job(
        inputs={"pixels": {"type": "poisson", "shape": [64], "max_rate_hz": 50.0}},
        connections={"drive": {"type": "dense", "pre": "pixels", "post": "cells", "weight": 3.0, "learning": [{"type": "triplet_stdp"}]}},
    )
    document.pop("duration_ms")
    document.update(
        kind="train_evaluate",
        presentation_ms=20.0,
        rest_ms=5.0,
        batch_size=1,
        eval_batch_size=2,
        data={"dataset": "digits", "train_samples": 2, "test_samples": 3},
        readout={"type": "max_rate_labels", "population": "cells"},
    )
    spec = validate_spec(document)
    assert "triplet_stdp" in native_unsupported_reason(spec, learning=True)
    assert native_unsupported_reason(spec, learning=False) is None

    # Training on PyTorch: 2 samples of 25 steps, 9 modules (2 per node and connection, 1 per rule)
    # and 2 x 256 synapse operations (delivery and rule) per step.
    modules = 2 * 3 + 2 * 1 + 1
    train = 50 * (modules * estimate.STEP_OVERHEAD_S["cpu"] + 512 * estimate.SYNAPSE_COST_S["cpu"])
    train += 50 * estimate.RULE_OVERHEAD_S["cpu"]

    # Labelling (2 samples in 1 batch) and testing (3 samples in 2 batches) run natively, with 2 run calls per batch.
    # The pixels fire at 50 Hz times the digits' mean intensity during 20 of 25 steps. The unconnected noise input
    # adds 6 drawn units but no synapse events.
    pixel_rate = 50.0 * estimate.MEAN_INTENSITY["digits"] * 0.001 * 20 / 25
    sample_cost = estimate.NATIVE_UNIT_S * (4 + 6 + 64) + estimate.NATIVE_EVENT_S * pixel_rate * 256
    step_cost = estimate.NATIVE_STEP_S

    def native(samples: int, batches: int) -> float:
        python = batches * (estimate.NATIVE_BATCH_S + 2 * estimate.NATIVE_CALL_S) + samples * estimate.NATIVE_SAMPLE_S
        return python + batches * 25 * step_cost + samples * 25 * sample_cost

    expected = estimate.JOB_OVERHEAD_S + train + native(2, 1) + native(3, 2)
    assert spec.estimate().seconds == pytest.approx(expected, rel=1e-9)


def test_quick_example_estimate_is_native():
    document = json.loads((EXAMPLES / "diehl_cook_quick.json").read_text())
    spec = validate_spec(dict(document, device="cpu"))
    assert native_unsupported_reason(spec, learning=True) is None
    # Measured with one thread on the 2-core reference machine: about 7 to 10 s. The PyTorch model estimated 10 min.
    assert 3.0 < spec.estimate().seconds < 20.0


def test_delay_learning_example_trains_on_torch():
    document = json.loads((EXAMPLES / "delay_learning_pattern.json").read_text())
    spec = validate_spec(dict(document, device="cpu"))
    assert "delay_adjusted_stdp" in native_unsupported_reason(spec, learning=True)
    assert native_unsupported_reason(spec, learning=False) is None
