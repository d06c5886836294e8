"""Learning rule specs, attached to a connection.

Each spec mirrors a rule of :mod:`ember.learning`: the same parameter names,
units and defaults. Amplitudes and rates are in the weight's unit (or ms for
delay changes), time constants in ms. Every rule works on every connection
type, through the connection's learning view.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, model_validator

from ember.spec.common import SpecModel, spec_error


class _RuleBase(SpecModel):
    #: The name of the ember.learning class that the builder constructs.
    rule_class: ClassVar[str] = ""
    #: Whether the rule changes delays, so the connection needs them.
    needs_delays: ClassVar[bool] = False

    reduce: Literal["sum", "mean"] = Field("mean", description="how updates of a batch's samples combine")

    def rule_arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of the rule class, without ``bounds``."""
        return self.model_dump(exclude={"type", "bound", "exponent"})


class _SpikeTimingBase(_RuleBase):
    timing: Literal["arrival", "emission"] = Field(
        "arrival", description="time presynaptic spikes at their arrival through the delays, or at emission"
    )
    bound: Literal["none", "hard", "soft", "power"] = Field(
        "none",
        description="weight dependence of updates: none (only the connection's w_min/w_max clip), hard clipping, "
        "soft (scaled by w_max - w and w - w_min) or power (those differences to the power exponent)",
    )
    exponent: float = Field(1.0, gt=0.0, description="the exponent of power bounds")


class StdpSpec(_SpikeTimingBase):
    """Pair-based STDP with exponential traces.

    At a postsynaptic spike ``w += a_plus * x_pre``; at the arrival of a
    presynaptic spike ``w -= a_minus * x_post``. ``x_pre`` decays with
    ``tau_plus`` and ``x_post`` with ``tau_minus``; each adds 1 per spike
    (``trace = "all_to_all"``) or is set to 1 (``"nearest"``).
    """

    rule_class: ClassVar[str] = "STDP"
    type: Literal["stdp"]
    a_plus: float = Field(0.01, description="potentiation per pair (negative: anti-Hebbian)")
    a_minus: float = Field(0.01, description="depression per pair (negative: anti-Hebbian)")
    tau_plus: float = Field(20.0, gt=0.0, description="presynaptic trace time constant in ms")
    tau_minus: float = Field(20.0, gt=0.0, description="postsynaptic trace time constant in ms")
    trace: Literal["all_to_all", "nearest"] = "all_to_all"


class DiehlCookStdpSpec(_SpikeTimingBase):
    """The STDP of Diehl and Cook (2015)'s code.

    Traces are set to 1 at each spike and decay exponentially. At a
    presynaptic spike ``w -= nu_pre * x_post1``; at a postsynaptic spike
    ``w += nu_post * x_pre * x_post2``, with ``x_post2`` read before the
    spike updates it. Use with ``w_min = 0`` and ``w_max = 1`` on the connection.
    """

    rule_class: ClassVar[str] = "DiehlCookSTDP"
    type: Literal["diehl_cook_stdp"]
    nu_pre: float = Field(1e-4, description="depression rate at presynaptic spikes")
    nu_post: float = Field(1e-2, description="potentiation rate at postsynaptic spikes")
    tau_pre: float = Field(20.0, gt=0.0, description="presynaptic trace time constant in ms")
    tau_post1: float = Field(20.0, gt=0.0, description="time constant of the postsynaptic trace of depression in ms")
    tau_post2: float = Field(40.0, gt=0.0, description="time constant of the postsynaptic trace of potentiation in ms")


class TripletStdpSpec(_SpikeTimingBase):
    """Triplet STDP (Pfister and Gerstner, 2006): pair terms plus terms gated by slower traces."""

    rule_class: ClassVar[str] = "TripletSTDP"
    type: Literal["triplet_stdp"]
    a2_plus: float = Field(5e-10, description="pair potentiation amplitude")
    a3_plus: float = Field(6.2e-3, description="triplet potentiation amplitude")
    a2_minus: float = Field(7e-3, description="pair depression amplitude")
    a3_minus: float = Field(2.3e-4, description="triplet depression amplitude")
    tau_plus: float = Field(16.8, gt=0.0, description="fast presynaptic trace time constant in ms")
    tau_minus: float = Field(33.7, gt=0.0, description="fast postsynaptic trace time constant in ms")
    tau_x: float = Field(101.0, gt=0.0, description="slow presynaptic trace time constant in ms")
    tau_y: float = Field(125.0, gt=0.0, description="slow postsynaptic trace time constant in ms")
    trace: Literal["all_to_all", "nearest"] = "all_to_all"


class PowerLawStdpSpec(_SpikeTimingBase):
    """At each postsynaptic spike ``Δw = eta (x_pre - x_target) (w_max - w) ** mu`` (Diehl and Cook, 2015)."""

    rule_class: ClassVar[str] = "PowerLawSTDP"
    type: Literal["power_law_stdp"]
    eta: float = Field(0.01, description="learning rate")
    x_target: float = Field(0.4, description="target value of the presynaptic trace")
    mu: float = Field(0.2, ge=0.0, description="exponent of the weight dependence")
    tau_pre: float = Field(20.0, gt=0.0, description="presynaptic trace time constant in ms")
    w_max: float | None = Field(None, description="maximum weight; null: the connection's w_max")
    trace: Literal["all_to_all", "nearest"] = "all_to_all"

    def rule_arguments(self) -> dict[str, Any]:
        arguments = super().rule_arguments()
        arguments["exponent"] = arguments.pop("mu")
        return arguments


class DelayAdjustedStdpSpec(_RuleBase):
    """Delay learning of Nadafian and Ganjtabesh (2020), with optional weight STDP on the same timing.

    With the delay-adjusted difference ``dt_adj = t_post - (t_pre + d)`` of
    the nearest spikes, an input that arrived before the postsynaptic spike
    (``dt_adj >= 0``) has its delay shortened by ``b_minus * exp(-dt_adj /
    tau_minus)`` ms, one that arrived after it lengthened by ``b_plus *
    exp(dt_adj / tau_plus)`` ms. The weight part adds ``a_plus *
    exp(-dt_adj / weight_tau_plus)`` or subtracts ``a_minus * exp(dt_adj /
    weight_tau_minus)``. Delay learning onto a neuron stops for good once one
    of its delays falls below ``stop_below`` (above ``b_minus``).
    """

    rule_class: ClassVar[str] = "DelayAdjustedSTDP"
    needs_delays: ClassVar[bool] = True
    type: Literal["delay_adjusted_stdp"]
    b_minus: float = Field(1.0, ge=0.0, description="largest delay decrease per event in ms")
    b_plus: float = Field(1.0, ge=0.0, description="largest delay increase per event in ms")
    tau_minus: float = Field(5.0, gt=0.0, description="time constant of delay decreases in ms")
    tau_plus: float = Field(5.0, gt=0.0, description="time constant of delay increases in ms")
    a_plus: float = Field(0.0, description="weight potentiation amplitude")
    a_minus: float = Field(0.0, description="weight depression amplitude")
    weight_tau_plus: float = Field(20.0, gt=0.0, description="time constant of weight potentiation in ms")
    weight_tau_minus: float = Field(20.0, gt=0.0, description="time constant of weight depression in ms")
    stop_below: float | None = Field(
        None, ge=0.0, description="stop delay learning onto a neuron once one of its delays is below this (ms); null: never"
    )
    d_min: float | None = Field(None, ge=0.0, description="smallest delay in ms; null: the connection's min_ms")
    d_max: float | None = Field(None, ge=0.0, description="largest delay in ms; null: the connection's max_ms")
    bound: Literal["none", "hard", "soft", "power"] = Field("none", description="weight dependence of the weight part")
    exponent: float = Field(1.0, gt=0.0, description="the exponent of power bounds")

    @model_validator(mode="after")
    def _stop_above_step(self) -> DelayAdjustedStdpSpec:
        if self.stop_below is not None and not self.stop_below > self.b_minus:
            raise spec_error(
                "stop_below_not_above_b_minus",
                f"stop_below = {self.stop_below:g} ms must be above b_minus = {self.b_minus:g} ms, so that no delay "
                "is shortened below 0 ms; raise stop_below or lower b_minus",
                ("stop_below",),
                self.stop_below,
            )
        if self.d_min is not None and self.d_max is not None and self.d_min > self.d_max:
            raise ValueError(f"d_min ({self.d_min} ms) must not exceed d_max ({self.d_max} ms)")
        return self


class HomeostasisSpec(_RuleBase):
    """Linear homeostasis of each postsynaptic neuron's rate ``r`` toward ``target_rate``.

    At the end of every ``interval`` ms, with ``δ = (r* - r) / r*``: incoming
    weights move by ``+eta δ``, incoming delays by ``-eta δ`` ms, or the
    threshold by ``-eta δ`` mV, so an under-active neuron gets stronger and
    earlier inputs or a lower threshold.
    """

    rule_class: ClassVar[str] = "Homeostasis"
    type: Literal["homeostasis"]
    target_rate: float = Field(gt=0.0, description="target firing rate r* in Hz")
    eta: float = Field(description="step size per unit of relative rate error (weight units, ms or mV)")
    parameter: Literal["weight", "delay", "threshold"] = Field("weight", description="what the rule changes")
    interval: float = Field(100.0, gt=0.0, description="length of a counting window in ms, a whole number of steps")

    @property
    def changes_delays(self) -> bool:
        return self.parameter == "delay"


class WeightNormalizationSpec(_RuleBase):
    """Scale each postsynaptic neuron's incoming weights to sum to ``target_sum``.

    With ``on_sample``, before every training sample (Diehl and Cook, 2015,
    use 78 for 784 inputs); with ``interval``, also every ``interval`` ms.
    """

    rule_class: ClassVar[str] = "WeightNormalization"
    type: Literal["weight_normalization"]
    target_sum: float = Field(78.0, description="the sum of each neuron's incoming weights")
    on_sample: bool = Field(True, description="normalise before every training sample")
    interval: float | None = Field(None, gt=0.0, description="also normalise every this many ms; null: never")

    def rule_arguments(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type", "reduce"})


LearningRuleSpec = Annotated[
    Union[
        StdpSpec,
        DiehlCookStdpSpec,
        TripletStdpSpec,
        PowerLawStdpSpec,
        DelayAdjustedStdpSpec,
        HomeostasisSpec,
        WeightNormalizationSpec,
    ],
    Field(discriminator="type"),
]
