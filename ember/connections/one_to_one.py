"""One-to-one connection: unit ``i`` of the source drives unit ``i`` of the target."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ember.connections.base import Connection, Reduce, reduce_batch


class OneToOne(Connection):
    """Connect each presynaptic unit to the postsynaptic unit with the same index.

    Args:
        shape: the shared shape of source and target.
        weight: a number or a tensor broadcastable to ``shape``.
        **kwargs: see :class:`~ember.connections.base.Connection`.

    Shape:
        weight and delay: ``shape``; synapse layout: ``(batch, *shape)``.
    """

    has_rows = True

    def __init__(self, shape: int | Sequence[int], weight: float | torch.Tensor, **kwargs) -> None:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        weight = torch.as_tensor(weight, dtype=kwargs.get("dtype") or torch.float32).expand(shape).clone()
        super().__init__(shape, shape, weight, **kwargs)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    def rows(self, pre_index: torch.Tensor):
        owner = torch.arange(pre_index.numel(), device=pre_index.device)
        weight = self.weight.reshape(-1)[pre_index]
        delay = None if self.delay is None else self.delay.reshape(-1)[pre_index]
        return pre_index, weight, delay, owner

    def synaptic(self, pre: torch.Tensor) -> torch.Tensor:
        return pre

    def postsynaptic(self, post: torch.Tensor) -> torch.Tensor:
        return post

    def per_synapse(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.unsqueeze(0)

    def fold(self, update: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        total = reduce_batch(update, "sum").expand(self.weight.shape)
        return total / self.batch_size if reduce == "mean" else total
