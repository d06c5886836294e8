"""Pure step functions of the neuron models, with their state and parameter records.

Each ``*_step(current, jump, state, parameters, dt)`` advances one step of
``dt`` ms and returns ``(spikes, new_state)``; it never modifies its inputs.
``current`` (nA) is held constant over the step and ``jump`` (mV) is added to
``v`` after integration; either may be ``None``. Parameters are tensors
broadcastable to the state (one value, or one per neuron).

Every model follows the same step order:

1. Decrement the refractory counter. A neuron is refractory while it is above 0.
2. Integrate the membrane equations over ``dt``, then add ``jump``.
3. Hold refractory neurons at the reset potential: their input is ignored.
4. A neuron that is not refractory and whose ``v`` reaches the threshold
   spikes, is reset in the same step, and its counter is set to
   ``refractory_steps``. Under saturating drive the inter-spike interval is
   therefore exactly ``refractory_steps`` steps (1 step when it is 0).

The spikes carry the surrogate gradient of :func:`ember.surrogate.spike`. The
reset is a selection by the spike value and passes no gradient to the
spike function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ember.surrogate import SurrogateName, spike

# ------------------------------------------------------------------ shared steps


def count_down(refractory: Tensor) -> tuple[Tensor, Tensor]:
    """Decrement the refractory counters and return them with the mask of neurons that may integrate."""
    counter = torch.clamp(refractory - 1, min=0)
    return counter, counter == 0


def hold_and_fire(
    v: Tensor,
    active: Tensor,
    counter: Tensor,
    threshold: Tensor,
    v_reset: Tensor,
    refractory_steps: Tensor,
    surrogate: SurrogateName,
    surrogate_slope: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Hold refractory neurons at reset, fire where ``v >= threshold`` and reset those that fired.

    Returns:
        ``(spikes, v, counter)`` after the step.
    """
    v = torch.where(active, v, v_reset)
    spikes = spike(v - threshold, surrogate, surrogate_slope) * active
    fired = spikes > 0
    v = torch.where(fired, v_reset, v)
    counter = torch.where(fired, refractory_steps, counter)
    return spikes, v, counter


def euler(
    variables: tuple[Tensor, ...],
    derivatives: Callable[..., tuple[Tensor, ...]],
    dt: float,
    substeps: int,
    active: Tensor,
    v_peak: Tensor,
) -> tuple[Tensor, ...]:
    """Integrate ``(v, *others)`` over ``dt`` ms by forward Euler in ``substeps`` equal substeps.

    ``derivatives(*variables)`` returns the time derivatives (per ms) in the
    same order. Refractory neurons (``active`` false) keep ``v`` but integrate
    the other variables. A neuron whose ``v`` has reached ``v_peak`` stops
    integrating for the rest of the step, so ``v`` cannot run off to infinity
    before it is reset.
    """
    h = dt / substeps
    for _ in range(substeps):
        rates = derivatives(*variables)
        below = variables[0] < v_peak
        v = torch.where(active & below, variables[0] + h * rates[0], variables[0])
        others = [torch.where(below, x + h * rate, x) for x, rate in zip(variables[1:], rates[1:])]
        variables = (v, *others)
    return variables


def _drive(resistance: Tensor, current: Tensor | None) -> Tensor | float:
    """Return ``R * I`` in mV, or 0 without input."""
    return 0.0 if current is None else resistance * current


def _add_jump(v: Tensor, jump: Tensor | None) -> Tensor:
    return v if jump is None else v + jump


# --------------------------------------------------------------------------- LIF


class LIFParameters(NamedTuple):
    """Parameters of :func:`lif_step`: time constant in ms, potentials in mV, resistance in MΩ."""

    tau_mem: Tensor
    v_rest: Tensor
    v_reset: Tensor
    v_threshold: Tensor
    resistance: Tensor
    refractory_steps: Tensor
    surrogate: SurrogateName = "fast_sigmoid"
    surrogate_slope: float = 1.0


class LIFState(NamedTuple):
    """State of :func:`lif_step`: membrane potential ``v`` (mV) and the refractory counter (steps)."""

    v: Tensor
    refractory: Tensor


def lif_step(
    current: Tensor | None, jump: Tensor | None, state: LIFState, p: LIFParameters, dt: float
) -> tuple[Tensor, LIFState]:
    """Advance leaky integrate-and-fire neurons by one step, integrating exactly.

    ``tau_mem dv/dt = -(v - v_rest) + R I`` has, for ``I`` constant over the
    step, the solution ``v(t + dt) = v_inf + (v(t) - v_inf) exp(-dt / tau_mem)``
    with ``v_inf = v_rest + R I``.
    """
    counter, active = count_down(state.refractory)

    # Relax exactly towards v_inf over the step.
    v_inf = p.v_rest + _drive(p.resistance, current)
    v = v_inf + (state.v - v_inf) * torch.exp(-dt / p.tau_mem)
    v = _add_jump(v, jump)

    spikes, v, counter = hold_and_fire(
        v, active, counter, p.v_threshold, p.v_reset, p.refractory_steps, p.surrogate, p.surrogate_slope
    )
    return spikes, LIFState(v, counter)


# ------------------------------------------------------------------ AdaptiveLIF


class AdaptiveLIFParameters(NamedTuple):
    """Parameters of :func:`adaptive_lif_step`: those of LIF, then ``theta_plus`` (mV) and ``tau_theta`` (ms)."""

    tau_mem: Tensor
    v_rest: Tensor
    v_reset: Tensor
    v_threshold: Tensor
    resistance: Tensor
    refractory_steps: Tensor
    surrogate: SurrogateName
    surrogate_slope: float
    theta_plus: Tensor
    tau_theta: Tensor
    theta_shared: bool
    adapt: bool


class AdaptiveLIFState(NamedTuple):
    """State of :func:`adaptive_lif_step`: ``v`` (mV), refractory counter, threshold increase ``theta`` (mV).

    ``theta`` has shape ``(batch, *shape)`` per sample, or ``shape`` when shared.
    """

    v: Tensor
    refractory: Tensor
    theta: Tensor


def adaptive_lif_step(
    current: Tensor | None, jump: Tensor | None, state: AdaptiveLIFState, p: AdaptiveLIFParameters, dt: float
) -> tuple[Tensor, AdaptiveLIFState]:
    """Advance LIF neurons whose threshold ``v_threshold + theta`` rises with each spike.

    ``tau_theta dtheta/dt = -theta``, integrated exactly, and each spike adds
    ``theta_plus`` to ``theta`` after the step's threshold test. A shared
    ``theta`` rises by ``theta_plus`` times the fraction of samples in which the
    neuron spiked and is returned detached from autograd. With ``adapt``
    false, ``theta`` stays fixed.
    """
    # Let theta decay towards 0, unless it is frozen.
    theta = state.theta * torch.exp(-dt / p.tau_theta) if p.adapt else state.theta

    # Integrate and fire as LIF against the raised threshold.
    lif = LIFParameters(**{field: getattr(p, field) for field in LIFParameters._fields})
    lif = lif._replace(v_threshold=p.v_threshold + theta)
    spikes, lif_state = lif_step(current, jump, LIFState(state.v, state.refractory), lif, dt)

    # Raise theta by theta_plus per spike.
    if p.adapt:
        rise = spikes.detach().mean(dim=0) if p.theta_shared else spikes
        theta = theta + p.theta_plus * rise

    # A shared theta outlives samples and BPTT windows, so it keeps no autograd history.
    if p.theta_shared:
        theta = theta.detach()
    return spikes, AdaptiveLIFState(lif_state.v, lif_state.refractory, theta)


# ------------------------------------------------------------------- Izhikevich


class IzhikevichParameters(NamedTuple):
    """Parameters of :func:`izhikevich_step` (``a``, ``b`` in 1/ms, ``c`` and ``v_peak`` in mV,
    ``d`` in mV/ms, ``capacitance`` in nF)."""

    a: Tensor
    b: Tensor
    c: Tensor
    d: Tensor
    v_peak: Tensor
    capacitance: Tensor
    refractory_steps: Tensor
    substeps: int = 1
    surrogate: SurrogateName = "fast_sigmoid"
    surrogate_slope: float = 1.0


class IzhikevichState(NamedTuple):
    """State of :func:`izhikevich_step`: ``v`` (mV), recovery ``u`` (mV/ms), refractory counter."""

    v: Tensor
    u: Tensor
    refractory: Tensor


def izhikevich_step(
    current: Tensor | None, jump: Tensor | None, state: IzhikevichState, p: IzhikevichParameters, dt: float
) -> tuple[Tensor, IzhikevichState]:
    """Advance Izhikevich neurons by one step of forward Euler.

    ``dv/dt = 0.04 v^2 + 5 v + 140 - u + I / C`` and ``du/dt = a (b v - u)``;
    at ``v >= v_peak``, ``v <- c`` and ``u <- u + d``.
    """
    counter, active = count_down(state.refractory)

    # Integrate both equations; I / C turns nA into mV/ms.
    drive = 0.0 if current is None else current / p.capacitance

    def derivatives(v: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return 0.04 * v**2 + 5.0 * v + 140.0 - u + drive, p.a * (p.b * v - u)

    v, u = euler((state.v, state.u), derivatives, dt, p.substeps, active, p.v_peak)
    v = _add_jump(v, jump)

    spikes, v, counter = hold_and_fire(
        v, active, counter, p.v_peak, p.c, p.refractory_steps, p.surrogate, p.surrogate_slope
    )

    # Each spike raises the recovery variable by d.
    u = torch.where(spikes > 0, u + p.d, u)
    return spikes, IzhikevichState(v, u, counter)


# -------------------------------------------------------------------------- QIF


class QIFParameters(NamedTuple):
    """Parameters of :func:`qif_step`: ``tau_mem`` in ms, potentials in mV, ``curvature`` in 1/mV,
    ``resistance`` in MΩ."""

    tau_mem: Tensor
    v_rest: Tensor
    v_critical: Tensor
    curvature: Tensor
    resistance: Tensor
    v_reset: Tensor
    v_peak: Tensor
    refractory_steps: Tensor
    substeps: int = 1
    surrogate: SurrogateName = "fast_sigmoid"
    surrogate_slope: float = 1.0


class QIFState(NamedTuple):
    """State of :func:`qif_step`: ``v`` (mV) and the refractory counter."""

    v: Tensor
    refractory: Tensor


def qif_step(
    current: Tensor | None, jump: Tensor | None, state: QIFState, p: QIFParameters, dt: float
) -> tuple[Tensor, QIFState]:
    """Advance quadratic integrate-and-fire neurons by one step of forward Euler.

    ``tau_mem dv/dt = curvature (v - v_rest) (v - v_critical) + R I``; at
    ``v >= v_peak``, ``v <- v_reset``.
    """
    counter, active = count_down(state.refractory)

    # Integrate the quadratic membrane equation.
    drive = _drive(p.resistance, current)

    def derivatives(v: Tensor) -> tuple[Tensor]:
        return ((p.curvature * (v - p.v_rest) * (v - p.v_critical) + drive) / p.tau_mem,)

    (v,) = euler((state.v,), derivatives, dt, p.substeps, active, p.v_peak)
    v = _add_jump(v, jump)

    spikes, v, counter = hold_and_fire(
        v, active, counter, p.v_peak, p.v_reset, p.refractory_steps, p.surrogate, p.surrogate_slope
    )
    return spikes, QIFState(v, counter)


# -------------------------------------------------------------------------- EIF


class EIFParameters(NamedTuple):
    """Parameters of :func:`eif_step`: ``tau_mem`` in ms, potentials and ``sharpness`` in mV,
    ``resistance`` in MΩ."""

    tau_mem: Tensor
    v_rest: Tensor
    v_rheobase: Tensor
    sharpness: Tensor
    resistance: Tensor
    v_reset: Tensor
    v_peak: Tensor
    refractory_steps: Tensor
    substeps: int = 1
    surrogate: SurrogateName = "fast_sigmoid"
    surrogate_slope: float = 1.0


class EIFState(NamedTuple):
    """State of :func:`eif_step`: ``v`` (mV) and the refractory counter."""

    v: Tensor
    refractory: Tensor


def eif_step(
    current: Tensor | None, jump: Tensor | None, state: EIFState, p: EIFParameters, dt: float
) -> tuple[Tensor, EIFState]:
    """Advance exponential integrate-and-fire neurons by one step of forward Euler.

    ``tau_mem dv/dt = -(v - v_rest) + sharpness exp((v - v_rheobase) / sharpness) + R I``;
    at ``v >= v_peak``, ``v <- v_reset``.
    """
    counter, active = count_down(state.refractory)

    # Integrate leak, exponential spike initiation and input.
    drive = _drive(p.resistance, current)

    def derivatives(v: Tensor) -> tuple[Tensor]:
        upswing = p.sharpness * torch.exp((v - p.v_rheobase) / p.sharpness)
        return ((-(v - p.v_rest) + upswing + drive) / p.tau_mem,)

    (v,) = euler((state.v,), derivatives, dt, p.substeps, active, p.v_peak)
    v = _add_jump(v, jump)

    spikes, v, counter = hold_and_fire(
        v, active, counter, p.v_peak, p.v_reset, p.refractory_steps, p.surrogate, p.surrogate_slope
    )
    return spikes, EIFState(v, counter)


# ------------------------------------------------------------------------- AdEx


class AdExParameters(NamedTuple):
    """Parameters of :func:`adex_step`: those of EIF, then ``a`` (µS), ``b`` (nA) and ``tau_w`` (ms)."""

    tau_mem: Tensor
    v_rest: Tensor
    v_rheobase: Tensor
    sharpness: Tensor
    resistance: Tensor
    v_reset: Tensor
    v_peak: Tensor
    a: Tensor
    b: Tensor
    tau_w: Tensor
    refractory_steps: Tensor
    substeps: int = 1
    surrogate: SurrogateName = "fast_sigmoid"
    surrogate_slope: float = 1.0


class AdExState(NamedTuple):
    """State of :func:`adex_step`: ``v`` (mV), adaptation current ``w`` (nA), refractory counter."""

    v: Tensor
    w: Tensor
    refractory: Tensor


def adex_step(
    current: Tensor | None, jump: Tensor | None, state: AdExState, p: AdExParameters, dt: float
) -> tuple[Tensor, AdExState]:
    """Advance adaptive exponential integrate-and-fire neurons by one step of forward Euler.

    ``tau_mem dv/dt = -(v - v_rest) + sharpness exp((v - v_rheobase) / sharpness) - R w + R I``
    and ``tau_w dw/dt = a (v - v_rest) - w``; at ``v >= v_peak``,
    ``v <- v_reset`` and ``w <- w + b``.
    """
    counter, active = count_down(state.refractory)

    # Integrate the membrane and the adaptation current together.
    drive = _drive(p.resistance, current)

    def derivatives(v: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        upswing = p.sharpness * torch.exp((v - p.v_rheobase) / p.sharpness)
        dv = (-(v - p.v_rest) + upswing - p.resistance * w + drive) / p.tau_mem
        return dv, (p.a * (v - p.v_rest) - w) / p.tau_w

    v, w = euler((state.v, state.w), derivatives, dt, p.substeps, active, p.v_peak)
    v = _add_jump(v, jump)

    spikes, v, counter = hold_and_fire(
        v, active, counter, p.v_peak, p.v_reset, p.refractory_steps, p.surrogate, p.surrogate_slope
    )

    # Each spike raises the adaptation current by b.
    w = torch.where(spikes > 0, w + p.b, w)
    return spikes, AdExState(v, w, counter)
