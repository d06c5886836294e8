"""Sparse connection with fixed connectivity, stored as a list of synapses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ember.connections.base import Connection, Reduce, reduce_batch
from ember.core import broadcast_shapes


class Sparse(Connection):
    """Connection whose synapses are an explicit list of (presynaptic, postsynaptic) pairs.

    Synapses are kept sorted by presynaptic unit with a row pointer (CSR), so a
    spike touches only the synapses of its own unit.

    Args:
        pre_shape: presynaptic shape.
        post_shape: postsynaptic shape.
        pre_index: flat presynaptic index of each synapse, shape ``(n,)``.
        post_index: flat postsynaptic index of each synapse, shape ``(n,)``.
        weight: weight of each synapse, shape ``(n,)`` or a number.
        **kwargs: see :class:`~ember.connections.base.Connection`; ``delay`` is
            per synapse, shape ``(n,)``.

    Shape:
        weight and delay: ``(n,)`` in sorted synapse order (see ``pre_index``
        and ``post_index`` after construction); synapse layout: ``(batch, n)``.
    """

    has_rows = True

    def __init__(
        self,
        pre_shape: int | Sequence[int],
        post_shape: int | Sequence[int],
        pre_index: torch.Tensor,
        post_index: torch.Tensor,
        weight: float | torch.Tensor,
        **kwargs,
    ) -> None:
        pre_index = torch.as_tensor(pre_index, dtype=torch.long).reshape(-1)
        post_index = torch.as_tensor(post_index, dtype=torch.long).reshape(-1)
        if pre_index.shape != post_index.shape:
            raise ValueError(
                f"pre_index and post_index must have the same length, got {pre_index.numel()} and {post_index.numel()}"
            )
        pre_size = math.prod((pre_shape,) if isinstance(pre_shape, int) else pre_shape)
        post_size = math.prod((post_shape,) if isinstance(post_shape, int) else post_shape)
        for name, index, size in (("pre_index", pre_index, pre_size), ("post_index", post_index, post_size)):
            if index.numel() and (index.min() < 0 or index.max() >= size):
                raise ValueError(f"{name} values must lie in [0, {size}), got [{index.min().item()}, {index.max().item()}]")
        order = torch.argsort(pre_index * post_size + post_index)
        weight = torch.as_tensor(weight, dtype=kwargs.get("dtype") or torch.float32)
        for name, value in (("weight", weight), ("delay", kwargs.get("delay"))):
            if isinstance(value, torch.Tensor) and not _broadcasts(value.shape, pre_index.shape):
                raise ValueError(
                    f"{name} must be a number or a tensor of shape ({pre_index.numel()},), one value per synapse, "
                    f"got shape {tuple(value.shape)}"
                )
        weight = weight.expand(pre_index.shape)[order]
        delay = kwargs.get("delay")
        if isinstance(delay, torch.Tensor) and delay.dim() > 0:
            kwargs["delay"] = delay.expand(pre_index.shape)[order]
        self.pre_size = pre_size
        self.post_size = post_size
        # Indexing by the sort order made a new tensor, so the base class need not copy it.
        kwargs["copy"] = False
        super().__init__(pre_shape, post_shape, weight.contiguous(), **kwargs)
        device = self.device
        self.register_buffer("pre_index", pre_index[order].to(device))
        self.register_buffer("post_index", post_index[order].to(device))
        counts = torch.bincount(self.pre_index, minlength=pre_size)
        self.register_buffer("row_start", torch.cat([counts.new_zeros(1), counts.cumsum(0)]))

    @classmethod
    def fixed_fan_in(
        cls,
        pre_shape: int | Sequence[int],
        post_shape: int | Sequence[int],
        fan_in: int,
        weight: float | torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> "Sparse":
        """Connect every postsynaptic unit to ``fan_in`` distinct presynaptic units drawn at random.

        ``weight`` (and a tensor ``delay``) are per synapse in the order
        post-major: synapse ``j * fan_in + m`` is the m-th input of unit ``j``.
        """
        pre_size = math.prod((pre_shape,) if isinstance(pre_shape, int) else pre_shape)
        post_size = math.prod((post_shape,) if isinstance(post_shape, int) else post_shape)
        if not 1 <= fan_in <= pre_size:
            raise ValueError(f"fan_in must lie in [1, {pre_size}] (the presynaptic size), got {fan_in}")
        scores = torch.rand(post_size, pre_size, generator=generator)
        pre_index = scores.argsort(dim=1)[:, :fan_in].reshape(-1)
        post_index = torch.arange(post_size).repeat_interleave(fan_in)
        return cls(pre_shape, post_shape, pre_index, post_index, weight, **kwargs)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, self.pre_size)
        out = torch.zeros(batch, self.post_size, dtype=weight.dtype, device=weight.device)
        out = out.index_add(1, self.post_index, flat[:, self.pre_index] * weight)
        return out.view(batch, *self.post_shape)

    def synapse_rows(self, pre_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the synapse numbers of the given presynaptic units and, for each, its position in ``pre_index``."""
        start = self.row_start[pre_index]
        counts = self.row_start[pre_index + 1] - start
        owner = torch.repeat_interleave(torch.arange(pre_index.numel(), device=pre_index.device), counts)
        first = torch.cumsum(counts, 0) - counts
        synapse = start[owner] + torch.arange(owner.numel(), device=owner.device) - first[owner]
        return synapse, owner

    def rows(self, pre_index: torch.Tensor):
        synapse, owner = self.synapse_rows(pre_index)
        delay = None if self.delay is None else self.delay[synapse]
        return self.post_index[synapse], self.weight[synapse], delay, owner

    def synaptic(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.reshape(pre.shape[0], self.pre_size)[:, self.pre_index]

    def postsynaptic(self, post: torch.Tensor) -> torch.Tensor:
        return post.reshape(post.shape[0], self.post_size)[:, self.post_index]

    def per_synapse(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.unsqueeze(0)

    def fold(self, update: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        total = reduce_batch(update, "sum").expand(self.weight.shape)
        return total / self.batch_size if reduce == "mean" else total


def _broadcasts(shape: torch.Size, target: torch.Size) -> bool:
    """Return whether a tensor of ``shape`` broadcasts to ``target`` without growing it."""
    try:
        return broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False
