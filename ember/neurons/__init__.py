"""Neuron populations: LIF, adaptive-threshold LIF, Izhikevich, QIF, EIF and AdEx.

Each model is a :class:`Population` module around a pure step function in
:mod:`ember.neurons.functional`. Units: ms, mV, nA, MΩ, µS.
"""

from ember.neurons import functional
from ember.neurons.adaptive import AdaptiveLIF
from ember.neurons.adex import AdEx
from ember.neurons.base import Population
from ember.neurons.eif import EIF
from ember.neurons.izhikevich import Izhikevich
from ember.neurons.lif import LIF
from ember.neurons.qif import QIF

__all__ = ["EIF", "LIF", "QIF", "AdEx", "AdaptiveLIF", "Izhikevich", "Population", "functional"]
