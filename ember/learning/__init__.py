"""Learning: plasticity rules written once for every connection type, and gradient training helpers.

Every rule is a :class:`~ember.learning.base.LearningRule` that a network
binds to one connection (``network.add_rule(name, rule, connection_name)``).
Rules read spikes and change weights and delays only through the
connection's learning view, so each works on dense, lateral, one-to-one,
sparse and conv2d connections alike.

:data:`RULES` maps the names that job specs use to the rule classes.
"""

from ember.learning.base import ArrivalTracker, LearningRule, SpikeTimingRule
from ember.learning.bounds import Bounds, HardBounds, PowerBounds, SoftBounds
from ember.learning.delay_learning import DelayAdjustedSTDP
from ember.learning.diehl_cook import DiehlCookSTDP
from ember.learning.gradient import apply_bounds, bptt_step, run_recorded, trainable_parameters
from ember.learning.homeostasis import Homeostasis
from ember.learning.kernel import KERNELS, KernelSTDP, make_kernel
from ember.learning.normalization import WeightNormalization
from ember.learning.power_law import PowerLawSTDP
from ember.learning.reward import MSTDP, MSTDPET
from ember.learning.stdp import STDP
from ember.learning.triplet import TripletSTDP

#: Rule classes by the names job specs use.
RULES: dict[str, type[LearningRule]] = {
    "stdp": STDP,
    "triplet_stdp": TripletSTDP,
    "kernel_stdp": KernelSTDP,
    "diehl_cook_stdp": DiehlCookSTDP,
    "power_law_stdp": PowerLawSTDP,
    "mstdp": MSTDP,
    "mstdpet": MSTDPET,
    "delay_adjusted_stdp": DelayAdjustedSTDP,
    "homeostasis": Homeostasis,
    "weight_normalization": WeightNormalization,
}

#: Bounds classes by the names job specs use.
BOUNDS: dict[str, type[Bounds]] = {"hard": HardBounds, "soft": SoftBounds, "power": PowerBounds}

__all__ = [
    "ArrivalTracker",
    "BOUNDS",
    "Bounds",
    "DelayAdjustedSTDP",
    "DiehlCookSTDP",
    "HardBounds",
    "Homeostasis",
    "KERNELS",
    "KernelSTDP",
    "LearningRule",
    "MSTDP",
    "MSTDPET",
    "PowerBounds",
    "PowerLawSTDP",
    "RULES",
    "STDP",
    "SoftBounds",
    "SpikeTimingRule",
    "TripletSTDP",
    "WeightNormalization",
    "apply_bounds",
    "bptt_step",
    "make_kernel",
    "run_recorded",
    "trainable_parameters",
]
