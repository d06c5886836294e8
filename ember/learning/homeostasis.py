"""Linear homeostasis: push each postsynaptic neuron's firing rate toward a target rate."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ember.learning.base import LearningRule, Reduce, average_to_weights, check_choice, check_finite, check_positive
from ember.units import to_steps

HomeostasisTarget = Literal["weight", "delay", "threshold"]


class Homeostasis(LearningRule):
    """Linear homeostasis on incoming weights, incoming delays or thresholds.

    The rule counts the spikes of each postsynaptic neuron over a window of
    ``interval`` ms. At the end of each window it computes the rate ``r``
    (Hz) and the relative error ``δ = (r* - r) / r*`` toward the target rate
    ``r*``, reduces ``δ`` over the batch, and changes

    - ``"weight"``: every incoming weight by ``+eta * δ`` (an under-active
      neuron gets stronger inputs);
    - ``"delay"``: every incoming delay by ``-eta * δ`` ms (an under-active
      neuron gets earlier inputs);
    - ``"threshold"``: the neuron's firing threshold by ``-eta * δ`` mV.

    Windows start when the state is reset (each sample), so with
    ``interval`` equal to the sample duration the rule acts once per sample,
    at its last step. Unlike the spike-timing rules it also acts when no
    neuron spiked, since silence is a rate of 0. A conv2d kernel weight or
    delay, shared by every position of a map, moves by the mean ``δ`` over
    those positions; thresholds move per neuron.

    For ``"threshold"`` the population's threshold parameter (``v_threshold``
    for LIF models) is expanded to one value per neuron when the rule is
    bound, so that each neuron can move on its own.

    Args:
        target_rate: ``r*`` in Hz, above 0.
        eta: the step size: weight units, ms or mV per unit of relative error.
        parameter: ``"weight"`` (default), ``"delay"`` or ``"threshold"``.
        interval: the length of a counting window in ms, a whole number of
            steps, default 100.0.
        reduce: how ``δ`` combines over the batch, ``"mean"`` (default) or ``"sum"``.

    Attributes:
        counts: the spikes of each neuron in the current window, ``(batch, *post_shape)``.
        elapsed: the steps of the current window, a 0-d int64 tensor.

    Raises:
        ValueError: for invalid values, or at binding a ``"delay"`` rule on a
            connection without delays or a ``"threshold"`` rule on a node
            without a threshold parameter.
    """

    def __init__(
        self,
        target_rate: float,
        eta: float,
        *,
        parameter: HomeostasisTarget = "weight",
        interval: float = 100.0,
        reduce: Reduce = "mean",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(reduce=reduce, dtype=dtype, device=device)
        self.target_rate = check_positive("target_rate", target_rate, "Hz")
        self.eta = check_finite("eta", eta)
        self.parameter: HomeostasisTarget = check_choice("parameter", parameter, get_args(HomeostasisTarget))  # type: ignore[assignment]
        self.interval = check_positive("interval", interval, "ms")

    def check_connection(self, connection, post) -> None:
        self.interval_steps = max(to_steps(self.interval, connection.dt, name="interval"), 1)
        if self.parameter == "delay" and connection.delay is None:
            raise ValueError("Homeostasis on delays needs a connection with delays: pass delay= (ms)")
        if self.parameter == "threshold":
            name = getattr(post, "threshold_name", "")
            if not name or not isinstance(getattr(post, name, None), torch.Tensor):
                raise ValueError(
                    f"Homeostasis on thresholds needs a neuron population with a threshold parameter, got {type(post).__name__}"
                )
            threshold = getattr(post, name)
            if tuple(threshold.shape) != tuple(post.shape):
                # One value per neuron, so each neuron's threshold can move on its own.
                setattr(post, name, threshold.detach().expand(post.shape).clone())

    def allocate(self) -> None:
        self.register_state("counts", self.connection.post_shape, 0.0)
        self.register_state("elapsed", (), 0, dtype=torch.long, batched=False)

    def update(self, step: int) -> None:
        self.counts = self.counts + self.spikes_of(self.post)
        self.elapsed = self.elapsed + 1
        if int(self.elapsed) < self.interval_steps:
            return
        rate = self.counts * (1000.0 / (self.interval_steps * self.dt))
        error = (self.target_rate - rate) / self.target_rate
        error = error.sum(0, keepdim=True) if self.reduce == "sum" else error.mean(0, keepdim=True)
        self.counts = torch.zeros_like(self.counts)
        self.elapsed = torch.zeros_like(self.elapsed)
        self.apply_error(error)

    def apply_error(self, error: torch.Tensor) -> None:
        """Move the chosen parameter by the relative rate error ``error`` of shape ``(1, *post_shape)``."""
        connection = self.connection
        if self.parameter == "threshold":
            threshold = getattr(self.post, self.post.threshold_name)
            threshold.add_((-self.eta * error[0]).to(threshold.dtype))
        elif self.parameter == "weight":
            connection.apply_update("weight", self.eta * average_to_weights(connection, error))
        else:
            connection.apply_update("delay", -self.eta * average_to_weights(connection, error))

    def extra_repr(self) -> str:
        parts = [f"target_rate={self.target_rate:g} Hz, eta={self.eta:g}, parameter={self.parameter!r}, interval={self.interval:g} ms"]
        if super().extra_repr():
            parts.append(super().extra_repr())
        return ", ".join(parts)
