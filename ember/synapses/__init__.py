"""Synapse models: how the weights that arrive at a step become current or a voltage jump.

Input units: mV for ``Delta(mode="voltage")``, pC for ``Delta(mode="current")``,
nA for current synapses, µS for conductance synapses.
"""

from ember.synapses.base import Synapse
from ember.synapses.conductance import Conductance
from ember.synapses.current import DoubleExponentialCurrent, ExponentialCurrent
from ember.synapses.delta import Delta, DeltaMode

__all__ = ["Conductance", "Delta", "DeltaMode", "DoubleExponentialCurrent", "ExponentialCurrent", "Synapse"]
