"""Neuron population specs, one model per ``type``.

Each spec mirrors the constructor of its :mod:`ember.neurons` class: the
same parameter names, units and defaults. Units: ms, mV, nA, MΩ, µS.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator

from ember.spec.common import SpecModel

Surrogate = Literal["fast_sigmoid", "arctan", "triangle"]


def shape_field(description: str) -> Any:
    return Field(description=description, min_length=1, max_length=4)


class _PopulationBase(SpecModel):
    """Fields shared by every neuron model."""

    #: The name of the ember.neurons class that the builder constructs.
    neuron_class: ClassVar[str] = ""

    shape: list[Annotated[int, Field(ge=1)]] = shape_field(
        "the population shape, for example [100] or [4, 9, 9] (maps, height, width)"
    )
    refractory_period: float = Field(0.0, ge=0.0, description="refractory period in ms, a whole number of steps")
    surrogate: Surrogate = Field("fast_sigmoid", description="surrogate derivative of the spike function")
    surrogate_slope: float = Field(1.0, gt=0.0, description="steepness of the surrogate derivative in 1/mV")
    trainable: list[str] = Field(default_factory=list, description="parameters stored per neuron with gradients")

    @field_validator("shape", mode="before")
    @classmethod
    def _int_shape(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("trainable")
    @classmethod
    def _known_trainable(cls, value: list[str]) -> list[str]:
        allowed = cls.parameter_names()
        unknown = [name for name in value if name not in allowed]
        if unknown:
            raise ValueError(f"unknown trainable parameter(s) {unknown}; choose from {list(allowed)}")
        return value

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The model parameters of this spec (the fields beyond the shared ones)."""
        shared = set(_PopulationBase.model_fields)
        return tuple(
            name
            for name, info in cls.model_fields.items()
            if name not in shared and info.annotation is float
        )

    def constructor_arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of the neuron class, without ``shape``, ``dt`` and ``batch_size``."""
        arguments = self.model_dump(exclude={"type", "shape", "trainable"})
        arguments["trainable"] = tuple(self.trainable)
        return arguments

    @property
    def size(self) -> int:
        size = 1
        for dim in self.shape:
            size *= dim
        return size


class LIFSpec(_PopulationBase):
    """Leaky integrate-and-fire neurons: ``tau_mem dv/dt = -(v - v_rest) + R I``."""

    neuron_class: ClassVar[str] = "LIF"
    type: Literal["lif"]
    tau_mem: float = Field(20.0, gt=0.0, description="membrane time constant in ms")
    v_rest: float = Field(-65.0, description="resting potential in mV")
    v_reset: float = Field(-65.0, description="reset potential in mV, below v_threshold")
    v_threshold: float = Field(-50.0, description="firing threshold in mV")
    resistance: float = Field(1.0, gt=0.0, description="membrane resistance in MΩ")


class AdaptiveLIFSpec(LIFSpec):
    """LIF neurons whose threshold rises by ``theta_plus`` mV per spike (Diehl and Cook, 2015)."""

    neuron_class: ClassVar[str] = "AdaptiveLIF"
    type: Literal["adaptive_lif"]  # type: ignore[assignment]
    theta_plus: float = Field(0.05, ge=0.0, description="threshold increase per spike in mV")
    tau_theta: float = Field(1e7, gt=0.0, description="decay time constant of the threshold increase in ms")
    theta_shared: bool = Field(True, description="one threshold increase per neuron, kept across samples")


class IzhikevichSpec(_PopulationBase):
    """Izhikevich (2003) neurons."""

    neuron_class: ClassVar[str] = "Izhikevich"
    type: Literal["izhikevich"]
    a: float = Field(0.02, description="recovery time scale in 1/ms")
    b: float = Field(0.2, description="recovery sensitivity to v")
    c: float = Field(-65.0, description="reset potential in mV")
    d: float = Field(8.0, description="recovery increase per spike")
    v_peak: float = Field(30.0, description="spike cutoff in mV")
    capacitance: float = Field(1.0, gt=0.0, description="membrane capacitance in nF")
    substeps: int = Field(1, ge=1, description="Euler steps per simulation step")


class QIFSpec(_PopulationBase):
    """Quadratic integrate-and-fire neurons."""

    neuron_class: ClassVar[str] = "QIF"
    type: Literal["qif"]
    tau_mem: float = Field(10.0, gt=0.0, description="membrane time constant in ms")
    v_rest: float = Field(-65.0, description="resting potential in mV")
    v_critical: float = Field(-50.0, description="critical potential in mV, above v_rest")
    curvature: float = Field(0.04, gt=0.0, description="factor of the quadratic term in 1/mV")
    resistance: float = Field(1.0, gt=0.0, description="membrane resistance in MΩ")
    v_reset: float = Field(-65.0, description="reset potential in mV")
    v_peak: float = Field(0.0, description="spike cutoff in mV")
    substeps: int = Field(1, ge=1, description="Euler steps per simulation step")


class EIFSpec(_PopulationBase):
    """Exponential integrate-and-fire neurons."""

    neuron_class: ClassVar[str] = "EIF"
    type: Literal["eif"]
    tau_mem: float = Field(10.0, gt=0.0, description="membrane time constant in ms")
    v_rest: float = Field(-65.0, description="resting potential in mV")
    v_rheobase: float = Field(-50.0, description="rheobase threshold in mV")
    sharpness: float = Field(2.0, gt=0.0, description="slope factor of spike initiation in mV")
    resistance: float = Field(1.0, gt=0.0, description="membrane resistance in MΩ")
    v_reset: float = Field(-65.0, description="reset potential in mV")
    v_peak: float = Field(0.0, description="spike cutoff in mV")
    substeps: int = Field(1, ge=1, description="Euler steps per simulation step")


class AdExSpec(_PopulationBase):
    """Adaptive exponential integrate-and-fire neurons (Brette and Gerstner, 2005)."""

    neuron_class: ClassVar[str] = "AdEx"
    type: Literal["adex"]
    tau_mem: float = Field(9.37, gt=0.0, description="membrane time constant in ms")
    v_rest: float = Field(-70.6, description="resting potential in mV")
    v_rheobase: float = Field(-50.4, description="rheobase threshold in mV")
    sharpness: float = Field(2.0, gt=0.0, description="slope factor of spike initiation in mV")
    resistance: float = Field(33.3, gt=0.0, description="membrane resistance in MΩ")
    v_reset: float = Field(-70.6, description="reset potential in mV")
    v_peak: float = Field(20.0, description="spike cutoff in mV")
    a: float = Field(0.004, description="subthreshold adaptation conductance in µS")
    b: float = Field(0.0805, description="adaptation current increase per spike in nA")
    tau_w: float = Field(144.0, gt=0.0, description="adaptation time constant in ms")
    substeps: int = Field(1, ge=1, description="Euler steps per simulation step")


PopulationSpec = Annotated[
    Union[LIFSpec, AdaptiveLIFSpec, IzhikevichSpec, QIFSpec, EIFSpec, AdExSpec],
    Field(discriminator="type"),
]

#: Every population spec class, by its ``type``.
POPULATION_SPECS: dict[str, type[_PopulationBase]] = {
    "lif": LIFSpec,
    "adaptive_lif": AdaptiveLIFSpec,
    "izhikevich": IzhikevichSpec,
    "qif": QIFSpec,
    "eif": EIFSpec,
    "adex": AdExSpec,
}
