"""Monitor specs: what the job records while it runs.

Spike monitors stream their records to ``spikes/MONITOR.npz``; state
monitors keep every ``every``-th value of a variable and are written to
``artifacts/MONITOR.npz``. Which samples are recorded is set by the job's
``record`` section.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from ember.spec.common import SpecModel


class SpikeMonitorSpec(SpecModel):
    """Spike events ``(sample, step, index)`` of a population or input."""

    type: Literal["spikes"]
    target: str = Field(description="the population or input to watch")


class StateMonitorSpec(SpecModel):
    """Every ``every``-th value of a state variable, such as ``v`` (mV) or ``threshold`` (mV).

    Records have the shape ``(batch, *population shape)``. When the batch size
    changes (between training and evaluation, or for a last, smaller batch),
    the monitor starts over, so ``artifacts/MONITOR.npz`` contains the records
    since the last change.
    """

    type: Literal["state"]
    target: str = Field(description="the population to watch")
    variable: str = Field("v", description="the variable, for example v or threshold")
    every: int = Field(1, ge=1, description="record one step in every")
    capacity: int = Field(1000, ge=1, le=10_000_000, description="records kept; older ones are overwritten")


MonitorSpec = Annotated[Union[SpikeMonitorSpec, StateMonitorSpec], Field(discriminator="type")]
