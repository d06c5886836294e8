"""Synapse specs: how the input that arrives through a connection reaches the neurons.

The unit of a connection's weights follows from its synapse: mV for a
voltage delta synapse, pC for a current delta synapse, nA for current
synapses and µS for conductance synapses.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from ember.spec.common import SpecModel


class DeltaSynapseSpec(SpecModel):
    """Each arriving weight jumps the membrane potential (``mode = "voltage"``, weights in mV)
    or injects its charge within one step (``"current"``, weights in pC)."""

    type: Literal["delta"] = "delta"
    mode: Literal["voltage", "current"] = "voltage"


class ExponentialSynapseSpec(SpecModel):
    """A current (nA) that jumps by the arriving weight and decays with ``tau_syn``."""

    type: Literal["exponential"]
    tau_syn: float = Field(5.0, gt=0.0, description="decay time constant in ms")


class DoubleExponentialSynapseSpec(SpecModel):
    """A current (nA) shaped as the difference of two exponentials, rising with ``tau_rise`` and decaying with ``tau_decay``."""

    type: Literal["double_exponential"]
    tau_rise: float = Field(1.0, gt=0.0, description="rise time constant in ms")
    tau_decay: float = Field(5.0, gt=0.0, description="decay time constant in ms, above tau_rise")

    @model_validator(mode="after")
    def _ordered(self) -> DoubleExponentialSynapseSpec:
        if not self.tau_decay > self.tau_rise:
            raise ValueError(f"tau_decay ({self.tau_decay} ms) must be above tau_rise ({self.tau_rise} ms)")
        return self


class ConductanceSynapseSpec(SpecModel):
    """A conductance (µS) that jumps by the arriving weight and decays with ``tau_syn``,
    driving the current ``g (e_rev - v)`` (nA)."""

    type: Literal["conductance"]
    tau_syn: float = Field(5.0, gt=0.0, description="decay time constant in ms")
    e_rev: float = Field(0.0, description="reversal potential in mV (0 for excitation, -100 to -70 for inhibition)")


SynapseSpec = Annotated[
    Union[DeltaSynapseSpec, ExponentialSynapseSpec, DoubleExponentialSynapseSpec, ConductanceSynapseSpec],
    Field(discriminator="type"),
]
