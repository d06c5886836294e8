"""Weight normalisation: the incoming weights of each postsynaptic neuron are rescaled to a target sum."""

from __future__ import annotations

import torch

from ember.learning.base import LearningRule, average_to_weights, check_finite, check_positive, incoming_sum
from ember.units import to_steps


class WeightNormalization(LearningRule):
    """Rescale the incoming weights of every postsynaptic neuron so that they sum to ``target_sum``.

    Each neuron's incoming weights are multiplied by ``target_sum / sum``. A
    conv2d map, whose kernel is shared by all its positions, is rescaled so
    that its kernel sums to ``target_sum``. A neuron whose incoming weights
    sum to 0 is left as it is. The connection's hard bounds apply after the
    rescaling, so with a ``w_max`` the sum can end up below the target.

    It acts at the times chosen:

    - ``on_sample=True`` (default): in :meth:`before_sample`, which the runner
      calls before each sample (Diehl and Cook normalise before each image,
      to a sum of 78 for 784 inputs);
    - ``interval`` (ms): also at the end of every ``interval`` ms of a sample,
      counted from the last reset;
    - any time by calling :meth:`normalize`.

    It does nothing while ``enabled`` is false.

    Args:
        target_sum: the sum of the incoming weights of each neuron (of each
            kernel for conv2d), default 78.0, in weight units.
        on_sample: whether :meth:`before_sample` normalises, default true.
        interval: a period in ms (a whole number of steps), or ``None``
            (default) for none.

    Attributes:
        elapsed: the steps since the last reset or normalisation by
            ``interval``, a 0-d int64 tensor.

    Raises:
        ValueError: for a target that is not finite or an interval that is not
            above 0 or not a whole number of steps.

    Examples:
        >>> import torch
        >>> from ember.connections import Dense
        >>> from ember.core import Node
        >>> link = Dense(2, 2, torch.tensor([[1.0, 3.0], [3.0, 1.0]]), dt=1.0)
        >>> rule = WeightNormalization(target_sum=2.0)
        >>> rule.bind(link, Node(2, dt=1.0), Node(2, dt=1.0))
        >>> rule.normalize()
        >>> link.weight.tolist()
        [[0.5, 1.5], [1.5, 0.5]]
    """

    def __init__(
        self,
        target_sum: float = 78.0,
        *,
        on_sample: bool = True,
        interval: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype=dtype, device=device)
        self.target_sum = check_finite("target_sum", target_sum)
        self.on_sample = bool(on_sample)
        self.interval = None if interval is None else check_positive("interval", interval, "ms")

    def check_connection(self, connection, post) -> None:
        self.interval_steps = None if self.interval is None else max(to_steps(self.interval, connection.dt, name="interval"), 1)

    def allocate(self) -> None:
        self.register_state("elapsed", (), 0, dtype=torch.long, batched=False)

    def before_sample(self) -> None:
        """Normalise if ``on_sample`` is set and the rule is enabled."""
        if self.enabled and self.on_sample:
            self.normalize()

    def update(self, step: int) -> None:
        if self.interval_steps is None:
            return
        self.elapsed = self.elapsed + 1
        if int(self.elapsed) >= self.interval_steps:
            self.elapsed = torch.zeros_like(self.elapsed)
            self.normalize()

    @torch.no_grad()
    def normalize(self) -> None:
        """Rescale the incoming weights of every postsynaptic neuron to ``target_sum`` now."""
        connection = self.connection
        weight = connection.weight.detach()
        total = incoming_sum(connection, weight)
        factor = torch.where(total != 0, self.target_sum / torch.where(total != 0, total, torch.ones_like(total)), torch.ones_like(total))
        scale = average_to_weights(connection, factor.unsqueeze(0))
        connection.apply_update("weight", weight * scale - weight)

    def extra_repr(self) -> str:
        parts = [f"target_sum={self.target_sum:g}"]
        if not self.on_sample:
            parts.append("on_sample=False")
        if self.interval is not None:
            parts.append(f"interval={self.interval:g} ms")
        return ", ".join(parts)
