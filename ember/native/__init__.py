"""Ember's native CPU path: compiled C kernels that run many network steps per call.

``Network.run`` uses them when autograd is off, the network is on the CPU
and every part of it is supported (see :mod:`ember.native.runner`); choose
with ``Network(engine="auto" | "torch" | "native")``. The kernels are
compiled on first use (:mod:`ember.native.build`); ``EMBER_NATIVE=0``
switches them off.
"""

from ember.native.runner import run_native, supports, unsupported_reason

__all__ = ["run_native", "supports", "unsupported_reason"]
