"""Kernel STDP: the weight change is any function of the spike-time difference.

A kernel is a function ``f(Δt) -> Δw`` that takes a tensor of spike-time
differences ``Δt = t_post - t_pre`` in ms (positive when the presynaptic
spike reached the synapse first) and returns the weight change for each.
It must be elementwise and accept any tensor shape. :data:`KERNELS` is the
fixed menu of named kernels that job specs can refer to;
:func:`make_kernel` builds one from its name and parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ember.learning.base import Reduce, SpikeTimingRule, Timing, check_finite, check_non_negative, check_positive

Kernel = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- the kernel menu


def exponential_kernel(
    a_plus: float = 0.01, a_minus: float = 0.01, tau_plus: float = 20.0, tau_minus: float = 20.0
) -> Kernel:
    """Return the classic asymmetric window.

    ``f(Δt) = a_plus * exp(-Δt / tau_plus)`` for ``Δt >= 0`` and
    ``-a_minus * exp(Δt / tau_minus)`` for ``Δt < 0`` (times in ms).
    """
    a_plus = check_finite("a_plus", a_plus)
    a_minus = check_finite("a_minus", a_minus)
    tau_plus = check_positive("tau_plus", tau_plus, "ms")
    tau_minus = check_positive("tau_minus", tau_minus, "ms")

    def kernel(delta_t: torch.Tensor) -> torch.Tensor:
        causal = a_plus * torch.exp(-delta_t.clamp(min=0.0) / tau_plus)
        anti_causal = -a_minus * torch.exp(delta_t.clamp(max=0.0) / tau_minus)
        return torch.where(delta_t >= 0, causal, anti_causal)

    return kernel


def gaussian_kernel(amplitude: float = 0.01, sigma: float = 10.0, center: float = 0.0, offset: float = 0.0) -> Kernel:
    """Return a symmetric window: ``f(Δt) = amplitude * exp(-(Δt - center)^2 / (2 sigma^2)) - offset``.

    ``sigma`` and ``center`` are in ms; a positive ``offset`` depresses pairs
    far from ``center``.
    """
    amplitude = check_finite("amplitude", amplitude)
    sigma = check_positive("sigma", sigma, "ms")
    center = check_finite("center", center, "ms")
    offset = check_finite("offset", offset)

    def kernel(delta_t: torch.Tensor) -> torch.Tensor:
        return amplitude * torch.exp(-((delta_t - center) ** 2) / (2.0 * sigma**2)) - offset

    return kernel


def mexican_hat_kernel(amplitude: float = 0.01, sigma: float = 10.0) -> Kernel:
    """Return the Ricker wavelet: ``f(Δt) = amplitude * (1 - (Δt / sigma)^2) * exp(-(Δt / sigma)^2 / 2)``.

    Near-coincident pairs (``|Δt| < sigma``, ms) potentiate and pairs
    further apart depress.
    """
    amplitude = check_finite("amplitude", amplitude)
    sigma = check_positive("sigma", sigma, "ms")

    def kernel(delta_t: torch.Tensor) -> torch.Tensor:
        scaled = (delta_t / sigma) ** 2
        return amplitude * (1.0 - scaled) * torch.exp(-scaled / 2.0)

    return kernel


def rectangular_kernel(
    a_plus: float = 0.01, a_minus: float = 0.01, window_plus: float = 20.0, window_minus: float = 20.0
) -> Kernel:
    """Return a box window: ``a_plus`` for ``0 <= Δt <= window_plus``, ``-a_minus`` for ``-window_minus <= Δt < 0``, else 0.

    Windows are in ms.
    """
    a_plus = check_finite("a_plus", a_plus)
    a_minus = check_finite("a_minus", a_minus)
    window_plus = check_non_negative("window_plus", window_plus, "ms")
    window_minus = check_non_negative("window_minus", window_minus, "ms")

    def kernel(delta_t: torch.Tensor) -> torch.Tensor:
        causal = (delta_t >= 0) & (delta_t <= window_plus)
        anti_causal = (delta_t < 0) & (delta_t >= -window_minus)
        return a_plus * causal.to(delta_t.dtype) - a_minus * anti_causal.to(delta_t.dtype)

    return kernel


#: The named kernels that job specs can use, with their keyword parameters.
KERNELS: dict[str, Callable[..., Kernel]] = {
    "exponential": exponential_kernel,
    "gaussian": gaussian_kernel,
    "mexican_hat": mexican_hat_kernel,
    "rectangular": rectangular_kernel,
}


def make_kernel(name: str, **parameters: float) -> Kernel:
    """Build the named kernel of :data:`KERNELS` with the given parameters.

    Raises:
        ValueError: for an unknown name or parameter.

    Examples:
        >>> import torch
        >>> make_kernel("rectangular", window_plus=5.0)(torch.tensor([3.0, 7.0, -1.0]))
        tensor([ 0.0100,  0.0000, -0.0100])
    """
    if name not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))} or a function, got {name!r}")
    factory = KERNELS[name]
    known = factory.__code__.co_varnames[: factory.__code__.co_argcount]
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"kernel {name!r} takes parameters {', '.join(known)}; unknown: {', '.join(unknown)}")
    return factory(**parameters)


# --------------------------------------------------------------------------- the rule


class KernelSTDP(SpikeTimingRule):
    """STDP whose weight change is a kernel of the time difference of the nearest spikes.

    Each synapse remembers when the last presynaptic spike reached it and
    each postsynaptic neuron when it last spiked.

    - When a presynaptic spike reaches the synapse: ``Δw = f(t_post - t_arrival)``
      with the last postsynaptic spike before this step (``Δt < 0``).
    - When the postsynaptic neuron spikes: ``Δw = f(t_post - t_arrival)`` with
      the last arrival up to and including this step (``Δt >= 0``; an
      arrival whose delivery starts in this step counts with ``Δt = 0``).

    Pairs use only the nearest spikes, since a general kernel cannot be
    summed over all earlier spikes with a trace. Spikes arriving between two
    steps (fractional delays) count at their exact arrival time. The batch
    reduction and the event order are those of
    :class:`~ember.learning.base.SpikeTimingRule`.

    Args:
        kernel: a function of ``Δt`` (ms, tensor) returning ``Δw``, or the
            name of a kernel in :data:`KERNELS`.
        parameters: the keyword parameters of a named kernel; must be
            ``None`` for a function.
        reduce: the batch reduction, ``"mean"`` (default) or ``"sum"``.
        timing: ``"arrival"`` (default) or ``"emission"`` of presynaptic spikes.
        bounds: the weight dependence (:mod:`ember.learning.bounds`), or ``None``.

    Attributes:
        pre_age: steps since the last presynaptic arrival, ``inf`` before
            the first; ``(batch, *pre_shape)`` or per synapse.
        post_age: steps since the last postsynaptic spike, ``inf`` before
            the first; ``(batch, *post_shape)``.

    Raises:
        ValueError: for an unknown kernel name or parameter, parameters given
            with a function, or a kernel whose output shape differs from its
            input's.

    Examples:
        >>> rule = KernelSTDP("gaussian", parameters={"amplitude": 0.02, "sigma": 5.0})
        >>> rule = KernelSTDP(lambda dt_ms: 0.01 * torch.sign(dt_ms))
    """

    def __init__(
        self,
        kernel: Kernel | str = "exponential",
        *,
        parameters: dict[str, float] | None = None,
        reduce: Reduce = "mean",
        timing: Timing = "arrival",
        bounds=None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, timing=timing, bounds=bounds, dtype=dtype, device=device)
        if isinstance(kernel, str):
            self.kernel_name: str | None = kernel
            self.kernel = make_kernel(kernel, **(parameters or {}))
        elif callable(kernel):
            if parameters is not None:
                raise ValueError("parameters are only for named kernels; bind them into the function instead")
            self.kernel_name = None
            self.kernel = kernel
        else:
            raise ValueError(f"kernel must be a function of Δt or one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
        self.parameters_given = dict(parameters or {})

    def allocate_traces(self) -> None:
        self.register_state("pre_age", self.pre_trace_shape, float("inf"))
        self.register_state("post_age", self.connection.post_shape, float("inf"))

    def update(self, step: int) -> None:
        events, lateness = self.presynaptic_events(step)
        post_spikes = self.spikes_of(self.post)
        pre_age = self.pre_age + 1.0
        post_age = self.post_age + 1.0

        # Arrivals pair with the last postsynaptic spike of an earlier step.
        arrival_lateness = torch.zeros_like(events) if lateness is None else lateness
        anti_causal = self._kernel_sum(events, arrival_lateness, post_age, negate=True)
        pre_age = torch.where(events > 0, arrival_lateness, pre_age)

        # Postsynaptic spikes pair with the last arrival, this step's included.
        # An arrival whose delivery started at this step (negative age) pairs with Δt = 0.
        causal = self._kernel_sum(torch.isfinite(pre_age).to(self.dtype), pre_age.clamp(min=0.0), post_spikes, negate=False)
        post_age = torch.where(post_spikes > 0, torch.zeros_like(post_age), post_age)

        self.pre_age, self.post_age = pre_age, post_age
        self.update_weights(anti_causal)
        self.update_weights(causal)

    def _kernel_sum(self, pre_mask: torch.Tensor, pre_time: torch.Tensor, post: torch.Tensor, *, negate: bool):
        """Sum the kernel over the pairs of one kind, per weight.

        For arrivals (``negate``): ``pre_mask`` marks arrivals, ``pre_time``
        is their lateness and ``post`` is the postsynaptic age, so
        ``Δt = lateness - post_age``. For postsynaptic spikes: ``pre_mask``
        marks synapses with an earlier arrival, ``pre_time`` is its age and
        ``post`` the spikes, so ``Δt = pre_age``.
        """
        post_mask = torch.isfinite(post).to(self.dtype) if negate else post
        if not bool(pre_mask.any()) or not bool(post_mask.any()):
            return None
        connection = self.connection
        expand_pre = (lambda x: x) if self.per_synapse else connection.synaptic
        pre_time = expand_pre(torch.where(pre_mask > 0, pre_time, torch.zeros_like(pre_time)))
        paired = expand_pre(pre_mask) * connection.postsynaptic(post_mask) * self.mask
        if negate:
            post_age = torch.where(torch.isfinite(post), post, torch.zeros_like(post))
            delta_steps = pre_time - connection.postsynaptic(post_age)
        else:
            delta_steps = pre_time.expand_as(paired)
        delta_t = torch.where(paired > 0, delta_steps * self.dt, torch.zeros_like(paired))
        change = self.kernel(delta_t)
        if change.shape != delta_t.shape:
            raise ValueError(
                f"the kernel must return a tensor of the shape of its input {tuple(delta_t.shape)}, "
                f"got {tuple(change.shape)}; write it elementwise"
            )
        return connection.fold(torch.where(paired > 0, change, torch.zeros_like(change)) * paired, self.reduce)

    def extra_repr(self) -> str:
        kernel = repr(self.kernel_name) if self.kernel_name is not None else "<function>"
        parts = [f"kernel={kernel}"]
        if self.parameters_given:
            parts.append(f"parameters={self.parameters_given}")
        if super().extra_repr():
            parts.append(super().extra_repr())
        return ", ".join(parts)
