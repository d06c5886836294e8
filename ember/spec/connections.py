"""Connection specs: weighted, optionally delayed and plastic projections between nodes.

A connection goes from a population or input (``pre``) to a population
(``post``). Its ``type`` fixes the connectivity and the weight layout:

- ``dense``: every presynaptic unit to every postsynaptic unit, weights
  ``(pre_size, post_size)``.
- ``one_to_one``: unit ``i`` to unit ``i``, same shapes, weights of the shape.
- ``lateral``: a population onto itself without self-connections, either
  all-to-all or, with ``neighbourhood = "same_position"``, between the maps
  (first axis) at each position, for competition between feature maps.
- ``conv2d``: a convolution from ``(channels, height, width)`` to
  ``(maps, out_height, out_width)`` whose weights and delays are shared
  across positions, shape ``(maps, channels, kernel_h, kernel_w)``.
- ``sparse``: each pair connected with a fixed probability, drawn once from
  the job seed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from ember.spec.common import SpecModel
from ember.spec.initializers import DelaySpec, Init
from ember.spec.learning import LearningRuleSpec
from ember.spec.synapses import DeltaSynapseSpec, SynapseSpec

Shape = tuple[int, ...]


class _ConnectionBase(SpecModel):
    pre: str = Field(description="the presynaptic population or input")
    post: str = Field(description="the postsynaptic population")
    weight: Init = Field(description="initial weights, in the synapse's input unit")
    synapse: SynapseSpec = Field(default_factory=DeltaSynapseSpec, description="the synapse model")
    delay: DelaySpec | None = Field(None, description="per-synapse delays; null: no delay")
    w_min: float | None = Field(None, description="lower hard bound of the weights")
    w_max: float | None = Field(None, description="upper hard bound of the weights")
    bias: float | None = Field(None, description="input added at every step, in the synapse's input unit")
    learning: list[LearningRuleSpec] = Field(default_factory=list, description="plasticity rules of this connection")

    @model_validator(mode="after")
    def _weight_bounds(self) -> Any:
        if self.w_min is not None and self.w_max is not None and self.w_min > self.w_max:
            raise ValueError(f"w_min ({self.w_min}) must not exceed w_max ({self.w_max})")
        return self

    # Geometry, implemented per type.

    def shape_error(self, pre_shape: Shape, post_shape: Shape) -> str | None:
        """Return why the shapes cannot be connected, or ``None`` when they can."""
        return None

    def weight_shape(self, pre_shape: Shape, post_shape: Shape) -> Shape:
        """The shape of the weight (and delay) tensor."""
        raise NotImplementedError

    def synapse_count(self, pre_shape: Shape, post_shape: Shape) -> int:
        """The number of synapses, counting each position of a shared kernel."""
        return math.prod(self.weight_shape(pre_shape, post_shape))

    def default_min_delay_ms(self, dt: float) -> float:
        """The smallest delay in ms the connection delivers with (for the cycle rule)."""
        return 0.0 if self.delay is None else self.delay.min_ms


class DenseSpec(_ConnectionBase):
    """All-to-all connection.

    With ``exclude_matching``, unit ``i`` of ``pre`` does not connect to unit
    ``i`` of ``post`` (for inhibition onto every neuron but the one that
    excited it, as in Diehl and Cook, 2015); the weights are then stored per
    synapse, shape ``(size * (size - 1),)``.
    """

    type: Literal["dense"]
    exclude_matching: bool = Field(False, description="leave out the synapse from unit i to unit i (equal sizes)")

    def shape_error(self, pre_shape: Shape, post_shape: Shape) -> str | None:
        if self.exclude_matching and math.prod(pre_shape) != math.prod(post_shape):
            return (
                f"exclude_matching needs pre and post of equal size, got {math.prod(pre_shape)} and {math.prod(post_shape)}"
            )
        return None

    def weight_shape(self, pre_shape: Shape, post_shape: Shape) -> Shape:
        if self.exclude_matching:
            size = math.prod(post_shape)
            return (size * (size - 1),)
        return (math.prod(pre_shape), math.prod(post_shape))


class OneToOneSpec(_ConnectionBase):
    """Unit ``i`` of ``pre`` to unit ``i`` of ``post``."""

    type: Literal["one_to_one"]

    def shape_error(self, pre_shape: Shape, post_shape: Shape) -> str | None:
        if pre_shape != post_shape:
            return f"one_to_one needs equal shapes, got pre {list(pre_shape)} and post {list(post_shape)}"
        return None

    def weight_shape(self, pre_shape: Shape, post_shape: Shape) -> Shape:
        return tuple(post_shape)


class LateralSpec(_ConnectionBase):
    """A population onto itself, without self-connections.

    Its delay defaults to one step (``dt``) and may not be shorter, because
    the connection closes a cycle.
    """

    type: Literal["lateral"]
    neighbourhood: Literal["all", "same_position"] = Field(
        "all", description="all: every other neuron; same_position: the other maps at the same position"
    )

    def shape_error(self, pre_shape: Shape, post_shape: Shape) -> str | None:
        if self.pre != self.post:
            return f"a lateral connection must connect a population to itself, got pre {self.pre!r} and post {self.post!r}"
        if self.neighbourhood == "same_position" and len(post_shape) < 2:
            return f"neighbourhood 'same_position' needs a shape (maps, ...positions), got {list(post_shape)}"
        return None

    def weight_shape(self, pre_shape: Shape, post_shape: Shape) -> Shape:
        size = math.prod(post_shape)
        if self.neighbourhood == "all":
            return (size, size)
        maps = post_shape[0]
        return (size * (maps - 1),)

    def synapse_count(self, pre_shape: Shape, post_shape: Shape) -> int:
        size = math.prod(post_shape)
        if self.neighbourhood == "all":
            return size * (size - 1)
        return size * (post_shape[0] - 1)

    def default_min_delay_ms(self, dt: float) -> float:
        return dt if self.delay is None else self.delay.min_ms


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


PairOrInt = Union[Annotated[int, Field(ge=0)], Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]]


class Conv2dSpec(_ConnectionBase):
    """2-D convolution with weights and delays shared across positions."""

    type: Literal["conv2d"]
    kernel_size: PairOrInt = Field(description="kernel height and width, an int or [height, width]")
    stride: PairOrInt = 1
    padding: PairOrInt = 0
    dilation: PairOrInt = 1

    @field_validator("kernel_size", "stride", "dilation")
    @classmethod
    def _positive(cls, value: int | list[int]) -> int | list[int]:
        if min(_pair(value)) < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    def output_shape(self, pre_shape: Shape, maps: int) -> Shape | None:
        """Return ``(maps, out_height, out_width)``, or ``None`` if the kernel does not fit."""
        if len(pre_shape) != 3:
            return None
        kernel, stride, padding, dilation = (_pair(v) for v in (self.kernel_size, self.stride, self.padding, self.dilation))
        out = []
        for axis in range(2):
            size = (pre_shape[axis + 1] + 2 * padding[axis] - dilation[axis] * (kernel[axis] - 1) - 1) // stride[axis] + 1
            if size < 1:
                return None
            out.append(size)
        return (maps, out[0], out[1])

    def shape_error(self, pre_shape: Shape, post_shape: Shape) -> str | None:
        if len(pre_shape) != 3 or len(post_shape) != 3:
            return (
                f"conv2d needs pre (channels, height, width) and post (maps, height, width) shapes, "
                f"got pre {list(pre_shape)} and post {list(post_shape)}"
            )
        expected = self.output_shape(pre_shape, post_shape[0])
        if expected is None:
            return f"the kernel {list(_pair(self.kernel_size))} does not fit the padded input {list(pre_shape[1:])}"
        if tuple(post_shape) != expected:
            return f"the convolution of {list(pre_shape)} gives {list(expected)}, but post has shape {list(post_shape)}"
        return None

    def weight_shape(self, pre_shape: Shape, post_shape: Shape) -> Shape:
        kernel = _pair(self.kernel_size)
        return (post_shape[0], pre_shape[0], kernel[0], kernel[1])

    def synapse_count(self, pre_shape: Shape, post_shape: Shape) -> int:
        return math.prod(self.weight_shape(pre_shape, post_shape))

    def positions(self, post_shape: Shape) -> int:
        return post_shape[1] * post_shape[2]


class SparseSpec(_ConnectionBase):
    """Each (pre, post) pair connected with probability ``probability``, drawn once."""

    type: Literal["sparse"]
    probability: float = Field(gt=0.0, le=1.0, description="connection probability of each pair")
    autapses: bool = Field(False, description="allow a unit to connect to itself when pre is post")

    def weight_shape(self, pre_shape: Shape, post_shape: Shape) -> Shape:
        return (self.synapse_count(pre_shape, post_shape),)

    def synapse_count(self, pre_shape: Shape, post_shape: Shape) -> int:
        """The expected number of synapses (the drawn number varies around it)."""
        return int(math.ceil(self.probability * math.prod(pre_shape) * math.prod(post_shape)))


ConnectionSpec = Annotated[
    Union[DenseSpec, OneToOneSpec, LateralSpec, Conv2dSpec, SparseSpec],
    Field(discriminator="type"),
]
