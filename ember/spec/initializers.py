"""Initial values of weights, delays and other per-synapse tensors.

An initialiser is a JSON object discriminated by ``type``; a bare number is
shorthand for ``{"type": "constant", "value": number}``. Random initialisers
draw from a generator seeded by the job seed and the connection's name, so a
network is rebuilt with identical values.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import torch
from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from ember.spec.common import SpecModel, spec_error


class ConstantInit(SpecModel):
    """Every value equal to ``value``."""

    type: Literal["constant"] = "constant"
    value: float = Field(description="the value, in the unit of the initialised tensor")

    @property
    def upper(self) -> float:
        return self.value

    @property
    def lower(self) -> float:
        return self.value

    def sample(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """Return a tensor of ``shape`` filled with ``value``."""
        return torch.full(shape, self.value, dtype=dtype)


class UniformInit(SpecModel):
    """Values drawn uniformly from ``[low, high)``."""

    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> UniformInit:
        if not self.high >= self.low:
            raise ValueError(f"high ({self.high}) must be at least low ({self.low})")
        return self

    @property
    def upper(self) -> float:
        return self.high

    @property
    def lower(self) -> float:
        return self.low

    def sample(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """Return a tensor of ``shape`` drawn from ``U[low, high)``."""
        unit = torch.rand(shape, generator=generator, dtype=torch.float64)
        return (self.low + (self.high - self.low) * unit).to(dtype)


class NormalInit(SpecModel):
    """Values drawn from a normal distribution, optionally clipped to ``[min, max]``."""

    type: Literal["normal"]
    mean: float
    std: float = Field(ge=0.0, description="standard deviation, at least 0")
    min: float | None = Field(None, description="values below are raised to min")
    max: float | None = Field(None, description="values above are lowered to max")

    @model_validator(mode="after")
    def _ordered(self) -> NormalInit:
        if self.min is not None and self.max is not None and not self.max >= self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self

    @property
    def upper(self) -> float:
        """The largest value that can occur: ``max``, or the mean plus 6 standard deviations."""
        return self.max if self.max is not None else self.mean + 6.0 * self.std

    @property
    def lower(self) -> float:
        """The smallest value that can occur: ``min``, or the mean minus 6 standard deviations."""
        return self.min if self.min is not None else self.mean - 6.0 * self.std

    def sample(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """Return a tensor of ``shape`` drawn from ``N(mean, std²)`` and clipped."""
        values = self.mean + self.std * torch.randn(shape, generator=generator, dtype=torch.float64)
        if self.min is not None or self.max is not None:
            values = values.clamp(self.min, self.max)
        return values.to(dtype)


def _number_shorthand(value: Any) -> Any:
    """Read a bare number as a constant initialiser."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"type": "constant", "value": float(value)}
    return value


Init = Annotated[
    Union[ConstantInit, UniformInit, NormalInit],
    Field(discriminator="type"),
    BeforeValidator(_number_shorthand),
]


class DelaySpec(SpecModel):
    """Per-synapse transmission delays of a connection, in ms.

    A spike emitted at step ``t`` through a synapse with a delay of ``d``
    steps reaches the target at step ``t + d``. Fractional delays are split
    between the two neighbouring steps (``mode = "linear"``) or rounded
    (``"nearest"``). Delays stay within ``[min_ms, max_ms]``, also while
    plasticity changes them; the ring buffer of spikes in flight has
    ``max_ms / dt + 2`` steps.

    The lowest initial delay (``init``'s constant value, uniform ``low``, or
    normal ``min``, else normal ``mean``) must be at least ``min_ms``, and
    so at least 0 ms. The tail of a normal initialiser below ``min_ms`` or
    above ``max_ms`` is clipped to the bound.
    """

    init: Init = Field(description="initial delays in ms")
    min_ms: float = Field(0.0, ge=0.0, description="the smallest delay in ms")
    max_ms: float | None = Field(
        None, ge=0.0, description="the largest delay in ms; default: the largest initial delay"
    )
    trainable: bool = Field(False, description="store delays as a parameter with gradients (for BPTT)")
    mode: Literal["linear", "nearest"] = "linear"

    @model_validator(mode="before")
    @classmethod
    def _require_object(cls, value: Any) -> Any:
        if isinstance(value, (dict, DelaySpec)):
            return value
        raise PydanticCustomError(
            "model_type",
            "expected a delay object, got {kind}; write {example} for 2 ms on every synapse "
            "(short for {long_example}), or null for no delay",
            {
                "kind": _json_kind(value),
                "example": '{"init": 2.0}',
                "long_example": '{"init": {"type": "constant", "value": 2.0}}',
            },
        )

    @model_validator(mode="after")
    def _bounds(self) -> DelaySpec:
        self._check_lowest_delay()
        upper = self.effective_max_ms
        if upper < self.min_ms:
            raise ValueError(f"max_ms ({upper}) must be at least min_ms ({self.min_ms})")
        if self.max_ms is not None and self.init.upper > self.max_ms + 1e-9 and not isinstance(self.init, NormalInit):
            raise ValueError(
                f"initial delays reach {self.init.upper} ms, above max_ms = {self.max_ms} ms; raise max_ms"
            )
        if not math.isfinite(upper):
            raise ValueError("the delay range must be finite")
        return self

    @property
    def effective_max_ms(self) -> float:
        """``max_ms``, or the largest initial delay when it is not set."""
        return self.max_ms if self.max_ms is not None else max(self.init.upper, self.min_ms)

    def _check_lowest_delay(self) -> None:
        """Reject initial delays below ``min_ms`` or below 0 ms, which the bounds would raise silently."""
        field, lowest = _lowest_delay_field(self.init)
        name = "init" if field == "value" else f"init.{field}"
        if lowest < 0.0:
            also = f" and at least min_ms = {self.min_ms:g} ms" if self.min_ms > 0.0 else ""
            raise spec_error(
                "delay_negative",
                f"{name} = {lowest:g} ms is negative, but delays must be at least 0 ms{also}; "
                f"set {name} to at least {self.min_ms:g} ms",
                ("init", field),
                lowest,
            )
        # The tolerance accepts a lowest delay that differs from min_ms only by float rounding.
        if lowest < self.min_ms - 1e-9:
            raise spec_error(
                "delay_below_min_ms",
                f"{name} = {lowest:g} ms is below min_ms = {self.min_ms:g} ms, so those delays would be raised "
                f"to min_ms; set {name} to at least {self.min_ms:g} ms or lower min_ms",
                ("init", field),
                lowest,
            )


def _lowest_delay_field(init: ConstantInit | UniformInit | NormalInit) -> tuple[str, float]:
    """Return the initialiser field that sets the lowest initial delay, and its value in ms.

    A normal initialiser without ``min`` has no lowest value, so its mean is
    used instead, because its tail below ``min_ms`` is clipped by design.
    """
    if isinstance(init, ConstantInit):
        return "value", init.value
    if isinstance(init, UniformInit):
        return "low", init.low
    if init.min is not None:
        return "min", init.min
    return "mean", init.mean


def _json_kind(value: Any) -> str:
    """Name the JSON type of ``value`` for an error message ("a number", "a list", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a value of type {type(value).__name__}"
