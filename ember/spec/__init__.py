"""Pydantic models of network and job specs, shared by the CLI, the Python API and the REST API.

A job spec is a JSON document validated by :class:`JobSpec`. Every model
forbids unknown fields, model choices are discriminated by ``type`` (or
``kind``), and every error names the JSON path of the offending value and
the rule it broke:

    >>> try:
    ...     validate_spec({"kind": "simulate", "duration_ms": 10.0,
    ...                    "network": {"populations": {"cells": {"type": "lif", "shape": [2], "tau": 5}}}})
    ... except SpecError as error:
    ...     print(error.issues[0])
    $.network.populations.cells.tau: unknown field 'tau'; remove it or check its spelling [extra_forbidden] (got 5)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ember.spec.common import SpecError, SpecIssue, issues_from_validation_error, json_path
from ember.spec.connections import (
    ConnectionSpec,
    Conv2dSpec,
    DenseSpec,
    LateralSpec,
    OneToOneSpec,
    SparseSpec,
)
from ember.spec.estimate import Estimate
from ember.spec.initializers import ConstantInit, DelaySpec, Init, NormalInit, UniformInit
from ember.spec.inputs import (
    BackgroundInputSpec,
    EventsInputSpec,
    InputSpec,
    LatencyInputSpec,
    PoissonInputSpec,
    RankOrderInputSpec,
    SpikeTimesInputSpec,
)
from ember.spec.job import (
    DataSpec,
    DirectionSelectivityReadout,
    JobSpec,
    MaxRateReadout,
    PatternDetectionReadout,
    ReadoutSpec,
    RecordSpec,
)
from ember.spec.learning import (
    DelayAdjustedStdpSpec,
    DiehlCookStdpSpec,
    HomeostasisSpec,
    LearningRuleSpec,
    PowerLawStdpSpec,
    StdpSpec,
    TripletStdpSpec,
    WeightNormalizationSpec,
)
from ember.spec.limits import Limits
from ember.spec.monitors import MonitorSpec, SpikeMonitorSpec, StateMonitorSpec
from ember.spec.network import NetworkSpec
from ember.spec.populations import (
    AdaptiveLIFSpec,
    AdExSpec,
    EIFSpec,
    IzhikevichSpec,
    LIFSpec,
    PopulationSpec,
    QIFSpec,
)
from ember.spec.synapses import (
    ConductanceSynapseSpec,
    DeltaSynapseSpec,
    DoubleExponentialSynapseSpec,
    ExponentialSynapseSpec,
    SynapseSpec,
)


def validate_spec(document: Any, *, limits: Limits | None = None) -> JobSpec:
    """Validate a job spec document and return the model.

    Args:
        document: the parsed JSON document (a dict).
        limits: size limits; default: the ``EMBER_MAX_*`` environment variables.

    Raises:
        SpecError: with one :class:`SpecIssue` (JSON path, rule, message) per problem.
    """
    context = {"limits": limits} if limits is not None else None
    try:
        return JobSpec.model_validate(document, context=context)
    except ValidationError as error:
        raise SpecError(issues_from_validation_error(error, document)) from None


def load_spec(path: str | Path, *, limits: Limits | None = None) -> JobSpec:
    """Read a JSON job spec file and validate it.

    Raises:
        SpecError: if the file is not valid JSON (rule ``json_invalid``) or the spec is invalid.
        OSError: if the file cannot be read.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(
            [SpecIssue("$", "json_invalid", f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")]
        ) from None
    return validate_spec(document, limits=limits)


def job_schema() -> dict[str, Any]:
    """Return the JSON Schema of job specs."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", "JobSpec")
    return schema


__all__ = [
    "AdExSpec",
    "AdaptiveLIFSpec",
    "BackgroundInputSpec",
    "ConductanceSynapseSpec",
    "ConnectionSpec",
    "ConstantInit",
    "Conv2dSpec",
    "DataSpec",
    "DelayAdjustedStdpSpec",
    "DelaySpec",
    "DiehlCookStdpSpec",
    "DeltaSynapseSpec",
    "DenseSpec",
    "DirectionSelectivityReadout",
    "DoubleExponentialSynapseSpec",
    "EIFSpec",
    "Estimate",
    "EventsInputSpec",
    "ExponentialSynapseSpec",
    "HomeostasisSpec",
    "IzhikevichSpec",
    "Init",
    "InputSpec",
    "JobSpec",
    "LIFSpec",
    "LatencyInputSpec",
    "LateralSpec",
    "LearningRuleSpec",
    "Limits",
    "MaxRateReadout",
    "MonitorSpec",
    "NetworkSpec",
    "NormalInit",
    "OneToOneSpec",
    "PatternDetectionReadout",
    "PoissonInputSpec",
    "PowerLawStdpSpec",
    "PopulationSpec",
    "QIFSpec",
    "RankOrderInputSpec",
    "ReadoutSpec",
    "RecordSpec",
    "SparseSpec",
    "SpecError",
    "SpecIssue",
    "SpikeMonitorSpec",
    "SpikeTimesInputSpec",
    "StateMonitorSpec",
    "StdpSpec",
    "SynapseSpec",
    "TripletStdpSpec",
    "UniformInit",
    "WeightNormalizationSpec",
    "job_schema",
    "json_path",
    "load_spec",
    "validate_spec",
]
