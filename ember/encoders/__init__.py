"""Encoders that turn intensities (rates in Hz, normalised values) into spike trains.

Every encoder is a :class:`~ember.core.Stateful` with
``step(x, step, generator) -> spikes`` for use inside a network (through
``ember.sources.EncodedInput``) and ``encode(x, steps, seed) -> (T, B, *shape)``
for a whole presentation at once.
"""

from ember.encoders.base import Encoder
from ember.encoders.latency import LatencyEncoder, LatencyMapping
from ember.encoders.poisson import PoissonEncoder, PoissonMode, RateSaturationWarning, SaturationPolicy
from ember.encoders.rank_order import RankOrderEncoder, TieRule, rank_descending

__all__ = [
    "Encoder",
    "LatencyEncoder",
    "LatencyMapping",
    "PoissonEncoder",
    "PoissonMode",
    "RankOrderEncoder",
    "RateSaturationWarning",
    "SaturationPolicy",
    "TieRule",
    "rank_descending",
]
