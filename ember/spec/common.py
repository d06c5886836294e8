"""Shared base model, JSON paths and error reports for job specs.

Every spec model forbids unknown fields and validates strictly: a string is
never read as a number, a number never as a boolean. A validation error is
reported as a list of :class:`SpecIssue` records, each with the JSON path of
the offending value (``$.network.populations.exc.tau_mem``), the name of the
rule it broke (``greater_than``, ``extra_forbidden``, ``unknown_node``, ...)
and a message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

#: Names of populations, inputs, connections and monitors: they become
#: tensor names (``CONNECTION.weight``) and file names (``spikes/MONITOR.npz``).
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecModel(BaseModel):
    """Base of every spec model: unknown fields are errors and types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class SpecIssue:
    """One problem found in a spec.

    Attributes:
        path: the JSON path of the offending value, for example
            ``$.network.connections.input_exc.weight.high``.
        rule: the name of the rule that failed, for example ``greater_than``.
        message: a sentence that states what is wrong and what to do.
        value: the offending value when it is short enough to show, else ``None``.
    """

    path: str
    rule: str
    message: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        """Return the issue as a JSON-serialisable dict."""
        return {"path": self.path, "rule": self.rule, "message": self.message, "value": self.value}

    def __str__(self) -> str:
        text = f"{self.path}: {self.message} [{self.rule}]"
        if self.value is not None:
            text += f" (got {_short_repr(self.value)})"
        return text


class SpecError(ValueError):
    """A job spec that failed validation, with every issue found.

    Attributes:
        issues: the problems, each with its JSON path and rule.
    """

    def __init__(self, issues: Sequence[SpecIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"invalid job spec ({len(self.issues)} error(s)):\n{lines}")


def json_path(loc: Iterable[str | int]) -> str:
    """Format a location tuple as a JSON path such as ``$.network.monitors.raster``.

    Keys that are not identifiers are written in brackets (``$.data["a b"]``),
    list indices as ``[i]``.
    """
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER_RE.match(part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


#: The fields that discriminate the unions of the spec models.
DISCRIMINATORS = ("type", "kind", "dataset")


def _document_loc(loc: Sequence[str | int], document: Any) -> tuple[str | int, ...]:
    """Drop the entries that pydantic adds for union members from a location.

    Pydantic puts the tag of a discriminated union (``"lif"``) or the name of a
    union member (``"int"``) into the location. Walking the submitted document
    separates real keys from those entries: in an object, an entry equal to the
    object's discriminator value is a tag; below a scalar or inside a list, a
    string entry is a member name. Other entries are kept, also when the
    document lacks them (a missing field, or a default that broke a rule).
    """
    kept: list[str | int] = []
    current = document
    for part in loc:
        if isinstance(current, dict):
            if part in current:
                kept.append(part)
                current = current[part]
            elif any(current.get(key) == part for key in DISCRIMINATORS):
                continue
            else:
                kept.append(part)
                current = None
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            kept.append(part)
            current = current[part]
        elif isinstance(current, (list, str, int, float, bool)) and isinstance(part, str):
            continue
        else:
            kept.append(part)
            current = None
    return tuple(kept)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _showable(value: Any) -> Any:
    """Return ``value`` when it is a short JSON scalar, else ``None``."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str) and len(value) <= 200:
        return value
    return None


def offending_value(item: dict[str, Any]) -> Any:
    """Return the value to show for one pydantic error entry, or ``None`` when it is too long.

    For an unknown discriminator (``union_tag_invalid``) pydantic's input is
    the whole object, so the unknown tag itself (``"mnist60k"``) is shown.
    """
    if item.get("type") == "union_tag_invalid" and "tag" in (item.get("ctx") or {}):
        return _showable(item["ctx"]["tag"])
    return _showable(item.get("input"))


def issues_from_validation_error(error: ValidationError, document: Any) -> list[SpecIssue]:
    """Convert a pydantic ``ValidationError`` into spec issues with JSON paths.

    Args:
        error: the error raised by ``JobSpec.model_validate`` (or any spec model).
        document: the submitted JSON document, used to drop union-member
            entries from the locations.

    Returns:
        One :class:`SpecIssue` per error, in pydantic's order.
    """
    issues = []
    for item in error.errors(include_url=False):
        rule = item["type"]
        loc = _document_loc(item["loc"], document)
        message = item["msg"]
        if rule in ("union_tag_invalid", "union_tag_not_found"):
            # The problem is the discriminator field itself.
            discriminator = str(item.get("ctx", {}).get("discriminator", "'type'")).strip("'")
            loc = loc + (discriminator,)
        if rule == "value_error":
            message = message.removeprefix("Value error, ")
        elif rule == "union_tag_invalid":
            expected = item.get("ctx", {}).get("expected_tags", "")
            message = f"unknown {loc[-1]} {item.get('ctx', {}).get('tag')!r}; expected one of {expected}"
        elif rule == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}; remove it or check its spelling"
        elif rule in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            bound = {"greater_than": "above", "greater_than_equal": "at least", "less_than": "below", "less_than_equal": "at most"}[rule]
            limit = next(iter(item.get("ctx", {}).values()), "the limit")
            if isinstance(limit, (int, float)):
                limit = f"{limit:g}"
            message = f"{loc[-1]} must be {bound} {limit}"
        elif rule == "missing":
            message = f"required field {loc[-1]!r} is missing"
        issues.append(SpecIssue(json_path(loc), rule, message, offending_value(item)))
    return issues


def spec_error(rule: str, message: str, loc: Sequence[str | int], value: Any) -> ValidationError:
    """Build a ``ValidationError`` for one semantic rule at a nested location.

    Raised inside a model validator, pydantic prefixes ``loc`` with the
    model's own location, so the issue keeps its full JSON path.
    """
    return spec_errors([(rule, message, loc, value)])


def spec_errors(items: Sequence[tuple[str, str, Sequence[str | int], Any]]) -> ValidationError:
    """Build one ``ValidationError`` from several ``(rule, message, loc, value)`` items."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(rule, message.replace("{", "{{").replace("}", "}}")),
            loc=tuple(loc),
            input=value,
        )
        for rule, message, loc, value in items
    ]
    return ValidationError.from_exception_data("JobSpec", details)


def check_name(name: str, what: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a valid name for a network part."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{what} name {name!r} is invalid: use 1-64 letters, digits or '_', "
            "starting with a letter"
        )
