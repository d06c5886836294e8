"""Input specs: the nodes that emit spikes without integrating input.

Inputs of the types ``poisson``, ``latency``, ``rank_order`` and ``events``
present the current data sample; ``background`` and ``spike_times`` do not
depend on the data. A data-driven input's shape must match the data set's
sample shape (its size, if the shapes differ only in layout).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from ember.spec.common import SpecModel


class _InputBase(SpecModel):
    #: Whether the input presents the data sample (True) or runs on its own.
    data_driven: ClassVar[bool] = True

    shape: list[Annotated[int, Field(ge=1)]] = Field(
        description="the input shape, for example [784] or [1, 28, 28]", min_length=1, max_length=4
    )

    @field_validator("shape", mode="before")
    @classmethod
    def _int_shape(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def size(self) -> int:
        size = 1
        for dim in self.shape:
            size *= dim
        return size


class PoissonInputSpec(_InputBase):
    """Poisson spike trains whose rates are the sample's intensities (0 to 1) times ``max_rate_hz``.

    Diehl and Cook (2015) use a rate of pixel / 4 Hz for pixels 0-255, which
    is ``max_rate_hz = 63.75`` on intensities scaled to [0, 1].
    """

    type: Literal["poisson"]
    max_rate_hz: float = Field(gt=0.0, description="rate in Hz of an intensity of 1")
    mode: Literal["bernoulli", "exact"] = Field("bernoulli", description="how spikes are drawn, see PoissonEncoder")


class LatencyInputSpec(_InputBase):
    """One spike per unit, earlier for higher intensity, within ``window_ms``."""

    type: Literal["latency"]
    window_ms: float = Field(gt=0.0, description="the latest spike time in ms")
    mapping: Literal["linear", "log"] = "linear"
    log_floor: float = Field(0.01, gt=0.0, lt=1.0, description="intensity below which no spike is emitted (log mapping)")


class RankOrderInputSpec(_InputBase):
    """Units fire one after another in order of decreasing intensity."""

    type: Literal["rank_order"]
    interval_ms: float | None = Field(None, gt=0.0, description="time between successive spikes in ms; default dt")
    ties: Literal["index", "shared"] = Field("index", description="index: tied units fire in index order; shared: tied units fire together")


class EventsInputSpec(_InputBase):
    """Replays the spike events (time, unit) of an event data set's sample (pattern, rdk)."""

    type: Literal["events"]


class BackgroundInputSpec(_InputBase):
    """Poisson spike trains at a fixed rate, independent of the data."""

    data_driven: ClassVar[bool] = False
    type: Literal["background"]
    rate_hz: float = Field(ge=0.0, description="firing rate in Hz of every unit")


class SpikeTimesInputSpec(_InputBase):
    """Explicit spikes: unit ``indices[k]`` fires at ``times_ms[k]``, repeated in every sample."""

    data_driven: ClassVar[bool] = False
    type: Literal["spike_times"]
    times_ms: list[Annotated[float, Field(ge=0.0)]] = Field(description="spike times in ms from the sample start")
    indices: list[Annotated[int, Field(ge=0)]] = Field(description="flat unit index of each spike")

    @model_validator(mode="after")
    def _matching(self) -> SpikeTimesInputSpec:
        if len(self.times_ms) != len(self.indices):
            raise ValueError(
                f"times_ms and indices must have one length, got {len(self.times_ms)} and {len(self.indices)}"
            )
        if self.indices and max(self.indices) >= self.size:
            raise ValueError(f"indices must be below the input size {self.size}, got {max(self.indices)}")
        return self


InputSpec = Annotated[
    Union[
        PoissonInputSpec,
        LatencyInputSpec,
        RankOrderInputSpec,
        EventsInputSpec,
        BackgroundInputSpec,
        SpikeTimesInputSpec,
    ],
    Field(discriminator="type"),
]
