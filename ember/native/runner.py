"""Run a network's steps natively, many steps per call, on the PyTorch path's own state tensors.

:func:`run_native` is what :meth:`ember.network.Network.run` calls when
autograd is off and the network's engine is ``"auto"`` or ``"native"``. It
describes the network to the C kernels once (:class:`ember.native.plan.Plan`,
cached per network) and advances it by whole segments of steps per call. The
kernels read and write the same tensors as the PyTorch path: neuron ``v``,
``refractory``, ``theta`` and ``spikes``, synapse state, the ring buffers
``in_flight``, rule traces and weights. Runs on the two paths can therefore
be mixed step by step, saved and resumed.

Supported parts (for anything else :func:`unsupported_reason` names the part
and ``Network.run`` keeps to PyTorch):

- populations: :class:`~ember.neurons.LIF`, :class:`~ember.neurons.AdaptiveLIF`
  (shared or per-sample ``theta``, ``adapt`` on or off);
- sources: :class:`~ember.sources.EncodedInput` with a bernoulli
  :class:`~ember.encoders.PoissonEncoder` (drawn in C, bit for bit as
  ``torch.rand`` draws on the CPU generator), and any
  :class:`~ember.sources.EncodedInput`, :class:`~ember.sources.SpikeGenerator`,
  :class:`~ember.sources.PatternInput` or :class:`~ember.sources.CurrentInput`
  node, whose spikes are computed in Python for each segment;
- injected currents: :class:`~ember.sources.CurrentInput` with a constant amplitude;
- connections: :class:`~ember.connections.Dense`, :class:`~ember.connections.Lateral`,
  :class:`~ember.connections.OneToOne`, with or without per-synapse whole or
  fractional delays, with or without bias;
- synapses: :class:`~ember.synapses.Delta` (both modes),
  :class:`~ember.synapses.ExponentialCurrent`,
  :class:`~ember.synapses.DoubleExponentialCurrent`,
  :class:`~ember.synapses.Conductance`;
- rules: :class:`~ember.learning.STDP` and :class:`~ember.learning.DiehlCookSTDP`
  on dense and lateral connections with presynaptic traces per presynaptic
  unit (no delays, or ``timing="emission"``), without bounds or with hard or
  soft bounds; :class:`~ember.learning.WeightNormalization` without an
  interval (it acts between samples); disabled rules of any kind;
- monitors: :class:`~ember.monitors.SpikeMonitor`,
  :class:`~ember.monitors.SpikeCountMonitor`.

Results: the kernels repeat the PyTorch path's floating point operations in
the same order and precision, so spikes and state are the same bit for bit,
with one exception. PyTorch leaves some sums to a matrix product, whose order
of additions differs: a dense connection without delays whose inputs are 5 %
or more active, and the STDP potentiation sum over a batch of more than one
sample. There the two paths can differ in the last bit.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from collections.abc import Callable
from typing import Any

import torch

from ember.native import build
from ember.native.plan import Plan, Unsupported, Watch
from ember.native.structs import ABI_VERSION, configure

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the library


class Kernels:
    """The loaded library, and whether its Poisson draws match ``torch.rand``.

    Attributes:
        library: the ``ctypes`` library.
        native_rng: whether the library's generator gave the same draws as
            ``torch.rand`` in the self-check; if not, Poisson sources are
            drawn in Python.
    """

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self.native_rng = _draws_match_torch(library)
        if not self.native_rng:
            logger.debug("the native uniform draws differ from torch.rand; Poisson inputs are drawn in Python")


_kernels: Kernels | None = None
_kernels_failed = False


def kernels() -> Kernels | None:
    """Return the loaded kernels, or ``None`` when the native path is off or cannot be built."""
    global _kernels, _kernels_failed
    if not build.enabled():
        return None
    if _kernels is not None or _kernels_failed:
        return _kernels
    library = build.load()
    if library is None:
        _kernels_failed = True
        return None
    try:
        configure(library)
        version = library.ember_abi_version()
    except AttributeError as error:
        logger.debug("the native library lacks a function (%s); using the PyTorch path", error)
        _kernels_failed = True
        return None
    if version != ABI_VERSION:
        logger.debug("the native library has ABI %s, expected %s; using the PyTorch path", version, ABI_VERSION)
        _kernels_failed = True
        return None
    _kernels = Kernels(library)
    return _kernels


def _draws_match_torch(library: ctypes.CDLL) -> bool:
    """Compare the library's generator with ``torch.rand`` on the CPU generator for a few seeds and sizes."""
    from ember.random import mix_seed

    generator = torch.Generator()
    for dtype, draw in ((torch.float32, library.ember_uniform_f32), (torch.float64, library.ember_uniform_f64)):
        for seed, count in ((0, 1), (mix_seed(1, 2, 3), 700), (2**63 - 1, 1300), (12345, 97)):
            generator.manual_seed(seed)
            expected = torch.rand(count, generator=generator, dtype=dtype)
            drawn = torch.empty(count, dtype=dtype)
            draw(seed, count, drawn.data_ptr())
            if not torch.equal(expected, drawn):
                return False
    return all(library.ember_mix_seed3(*parts) == mix_seed(*parts) for parts in ((0, 0, 0), (2**62 + 5, 3, 99999)))


# --------------------------------------------------------------------------- public entry points


def unsupported_reason(network) -> str | None:
    """Return why ``network`` cannot run natively now, naming the part, or ``None`` if it can.

    Args:
        network: an :class:`ember.network.Network`.
    """
    library = kernels()
    if library is None:
        return _unavailable()
    try:
        plan = _plan_for(network, library)
        plan.check_state(network)
    except Unsupported as reason:
        return str(reason)
    return None


def supports(network) -> bool:
    """Return whether :func:`run_native` can run ``network`` now."""
    return unsupported_reason(network) is None


def run_native(network, steps: int, callback: Callable[[int], Any] | None = None) -> str | None:
    """Run ``steps`` steps of ``network`` natively, or return why not without changing anything.

    Args:
        network: an :class:`ember.network.Network` on the CPU.
        steps: the number of steps, at least 0.
        callback: called with the step index after each step. Each step is
            then a native call of its own, so the callback can read the state
            after every step.

    Returns:
        ``None`` after running, or the reason the network cannot run natively,
        before any step ran. A step that a callback made unsupported (for
        example by switching on an unsupported rule) runs on the PyTorch path.
    """
    library = kernels()
    if library is None:
        return _unavailable()
    if callback is not None:
        reason = unsupported_reason(network)
        if reason is not None:
            return reason
        for _ in range(int(steps)):
            if run_native(network, 1) is not None:
                network.step()
            callback(int(network.step_count) - 1)
        return None
    try:
        plan = _plan_for(network, library)
        plan.check_state(network)
    except Unsupported as reason:
        return str(reason)
    plan.run(network, int(steps))
    return None


def forget(network) -> None:
    """Drop the cached native description of ``network``, so the next run builds it again."""
    _plans.pop(network, None)


def _unavailable() -> str:
    if not build.enabled():
        return "the native path is switched off (EMBER_NATIVE=0)"
    return f"the native kernels are unavailable: {build.failure() or 'the library failed its checks'}"


# --------------------------------------------------------------------------- the plan cache


def _structure(network) -> tuple:
    """Return what identifies the network's graph: its parts by name and identity, their links and the batch size."""
    groups = (network.nodes, network.connections, network.currents, network.rules, network.monitors)
    parts = tuple(tuple((name, id(module)) for name, module in group.items()) for group in groups)
    links = (tuple(network.edges.items()), tuple(network.current_targets.items()), tuple(network.rule_targets.items()))
    return parts + links + (network.batch_size,)


class _Rejection:
    """A remembered reason why a network cannot run natively, valid while its structure and watched values hold."""

    def __init__(self, structure: tuple, reason: str, watch: Watch) -> None:
        self.structure = structure
        self.reason = reason
        self.watch = watch


_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan_for(network, library: Kernels) -> Plan:
    """Return the cached plan of ``network`` if it still holds, else build one.

    Raises:
        Unsupported: naming the part the kernels cannot run.
    """
    cached = _plans.get(network)
    structure = _structure(network)
    if cached is not None and cached.structure == structure and cached.watch.valid():
        if isinstance(cached, _Rejection):
            raise Unsupported(cached.reason)
        return cached
    watch = Watch()
    try:
        plan = Plan(network, library, structure, watch)
    except Unsupported as reason:
        # The watch contains what the checks read up to the rejection, so a change there brings a new check.
        _plans[network] = _Rejection(structure, str(reason), watch)
        logger.debug("the network runs on the PyTorch path: %s", reason)
        raise
    _plans[network] = plan
    return plan
