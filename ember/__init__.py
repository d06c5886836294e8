"""Ember: a spiking neural network engine on PyTorch.

The names below are loaded on first use, so ``import ember`` stays cheap.

Examples:
    >>> import torch, ember
    >>> net = ember.Network(dt=1.0)
    >>> _ = net.add("input", ember.SpikeGenerator(1, times_ms=[2.0], indices=[0], dt=1.0))
    >>> _ = net.add("cell", ember.LIF(1, dt=1.0, v_rest=0.0, v_reset=0.0, v_threshold=1.0))
    >>> _ = net.connect("link", "input", "cell", ember.Dense(1, 1, torch.full((1, 1), 2.0), dt=1.0))
    >>> _ = net.add_monitor("spikes", ember.SpikeMonitor("cell"))
    >>> net.run(5)
    >>> net.monitors["spikes"].spike_events().step.tolist()
    [2]
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Network": "ember.network",
    "NetworkError": "ember.network",
    "Dense": "ember.connections",
    "Lateral": "ember.connections",
    "OneToOne": "ember.connections",
    "Sparse": "ember.connections",
    "Conv2d": "ember.connections",
    "Population": "ember.neurons",
    "LIF": "ember.neurons",
    "AdaptiveLIF": "ember.neurons",
    "Izhikevich": "ember.neurons",
    "QIF": "ember.neurons",
    "EIF": "ember.neurons",
    "AdEx": "ember.neurons",
    "Delta": "ember.synapses",
    "ExponentialCurrent": "ember.synapses",
    "DoubleExponentialCurrent": "ember.synapses",
    "Conductance": "ember.synapses",
    "PoissonEncoder": "ember.encoders",
    "LatencyEncoder": "ember.encoders",
    "RankOrderEncoder": "ember.encoders",
    "EncodedInput": "ember.sources",
    "SpikeGenerator": "ember.sources",
    "CurrentInput": "ember.sources",
    "SpikeMonitor": "ember.monitors",
    "StateMonitor": "ember.monitors",
    "SpikeCountMonitor": "ember.monitors",
    "RateMonitor": "ember.monitors",
    "TraceMonitor": "ember.monitors",
    "to_steps": "ember.units",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ember' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
