"""Dense (all-to-all) and lateral connections."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ember.connections.base import Connection, Reduce, check_reduce

# Above this fraction of active inputs the dense matrix product is cheaper than
# gathering rows. Measured on a 2-core x86 CPU with torch 2.13 (an estimate
# for other hardware; both paths give the same result).
DENSE_ACTIVITY = 0.05


class Dense(Connection):
    """All-to-all connection: ``weight[i, j]`` connects presynaptic unit ``i`` to postsynaptic unit ``j``.

    Args:
        pre_shape: presynaptic shape; units are taken in flattened (C) order.
        post_shape: postsynaptic shape.
        weight: initial weights of shape ``(pre_size, post_size)``.
        **kwargs: see :class:`~ember.connections.base.Connection` (``dt``,
            ``synapse``, ``delay``, ``max_delay``, ``bias``, bounds, ...).

    Shape:
        weight and delay: ``(pre_size, post_size)``; synapse layout for
        learning rules: ``(batch, pre_size, post_size)``.

    Examples:
        >>> import torch
        >>> from ember.connections import Dense
        >>> c = Dense(3, 2, torch.ones(3, 2), dt=1.0)
        >>> c.linear(torch.tensor([[1.0, 0.0, 1.0]]), c.weight).tolist()
        [[2.0, 2.0]]
    """

    has_rows = True

    def __init__(self, pre_shape: int | Sequence[int], post_shape: int | Sequence[int], weight: torch.Tensor, **kwargs) -> None:
        pre_size = math.prod((pre_shape,) if isinstance(pre_shape, int) else pre_shape)
        post_size = math.prod((post_shape,) if isinstance(post_shape, int) else post_shape)
        weight = torch.as_tensor(weight)
        if tuple(weight.shape) != (pre_size, post_size):
            raise ValueError(
                f"weight must have shape (pre_size, post_size) = ({pre_size}, {post_size}), got {tuple(weight.shape)}"
            )
        self.pre_size = pre_size
        self.post_size = post_size
        super().__init__(pre_shape, post_shape, weight, **kwargs)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, self.pre_size)
        if not (torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad)):
            sample, pre = flat.nonzero(as_tuple=True)
            if sample.numel() < DENSE_ACTIVITY * flat.numel():
                rows = weight[pre] * flat[sample, pre].unsqueeze(1)
                out = torch.zeros(batch, self.post_size, dtype=rows.dtype, device=rows.device)
                return out.index_add_(0, sample, rows).view(batch, *self.post_shape)
        return (flat @ weight).view(batch, *self.post_shape)

    def _delay_plan(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return per-synapse ring-buffer offsets ``whole_steps * post_size + j`` and fractions (or ``None``).

        Cached until the delay tensor changes (tracked by its version counter).
        """
        key = (id(self.delay), self.delay._version, self.slots, self.delay.device)
        if getattr(self, "_plan_key", None) != key:
            with torch.no_grad():
                steps = self.delay_steps()
                whole = torch.floor(steps)
                fraction = steps - whole
                columns = torch.arange(self.post_size, device=steps.device)
                offsets = whole.long() * self.post_size + columns
                self._plan = (offsets, fraction if bool((fraction != 0).any()) else None)
            self._plan_key = key
        return self._plan

    def _emit_events(self, spikes: torch.Tensor, step: int) -> None:
        # Each active (sample, presynaptic unit) adds its whole row of weights at its own delays.
        batch_index, pre_index = spikes.reshape(spikes.shape[0], -1).nonzero(as_tuple=True)
        if batch_index.numel() == 0:
            return
        offsets, fraction = self._delay_plan()
        span = self.slots * self.post_size
        flat = self.in_flight.view(-1)
        base = (batch_index * span).unsqueeze(1)
        index = (offsets[pre_index] + step * self.post_size) % span + base
        rows = self.weight[pre_index]
        if self._lateral:
            rows = rows * self._off_diagonal_rows(pre_index)
        if fraction is None:
            flat.index_add_(0, index.view(-1), rows.view(-1))
            return
        share = fraction[pre_index]
        flat.index_add_(0, index.view(-1), (rows * (1.0 - share)).view(-1))
        later = (index - base + self.post_size) % span + base
        flat.index_add_(0, later.view(-1), (rows * share).view(-1))

    _lateral = False

    # Learning view: synapse layout (batch, pre_size, post_size).

    def synaptic(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.reshape(pre.shape[0], self.pre_size, 1)

    def postsynaptic(self, post: torch.Tensor) -> torch.Tensor:
        return post.reshape(post.shape[0], 1, self.post_size)

    def per_synapse(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.reshape(1, self.pre_size, self.post_size)

    def fold(self, update: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        check_reduce(reduce)
        total = update.sum(0) if update.dim() == 3 else update
        total = total.expand(self.pre_size, self.post_size).clone()
        return total / self.batch_size if reduce == "mean" else total

    def outer(self, pre: torch.Tensor, post: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        check_reduce(reduce)
        batch = pre.shape[0]
        pre = pre.reshape(batch, self.pre_size)
        post = post.reshape(batch, self.post_size)
        sample, index = pre.nonzero(as_tuple=True)
        if sample.numel() < DENSE_ACTIVITY * pre.numel():
            contribution = pre[sample, index].unsqueeze(1) * post[sample]
            total = torch.zeros(self.pre_size, self.post_size, dtype=post.dtype, device=post.device)
            total.index_add_(0, index, contribution)
        else:
            total = pre.transpose(0, 1) @ post
        return total / batch if reduce == "mean" else total


class Lateral(Dense):
    """All-to-all connection within one population, without self-connections.

    The diagonal of ``weight`` is held at 0. Because the connection closes a
    cycle (a population onto itself), its delay defaults to one step and may
    not fall below one step.

    Args:
        shape: the population's shape (pre and post).
        weight: initial weights of shape ``(size, size)``; the diagonal is ignored.
        **kwargs: see :class:`~ember.connections.base.Connection`.
    """

    def __init__(self, shape: int | Sequence[int], weight: torch.Tensor, **kwargs) -> None:
        dt = kwargs["dt"]
        kwargs.setdefault("delay", dt)
        kwargs.setdefault("min_delay", dt)
        if kwargs["delay"] is None:
            raise ValueError("a lateral connection needs a delay of at least one step (dt); pass delay >= dt ms")
        super().__init__(shape, shape, weight, **kwargs)

    _lateral = True

    def _mask_weight(self) -> None:
        self.weight.fill_diagonal_(0.0)

    def _off_diagonal_rows(self, pre_index: torch.Tensor) -> torch.Tensor:
        columns = torch.arange(self.post_size, device=pre_index.device)
        return (columns != pre_index.unsqueeze(1)).to(self.weight.dtype)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and weight.requires_grad:
            weight = weight * (1.0 - torch.eye(self.pre_size, dtype=weight.dtype, device=weight.device))
        return super().linear(x, weight)

    def fold(self, update: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        return super().fold(update, reduce).fill_diagonal_(0.0)

    def outer(self, pre: torch.Tensor, post: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        return super().outer(pre, post, reduce).fill_diagonal_(0.0)

    @property
    def synapse_count(self) -> int:
        return self.pre_size * (self.pre_size - 1)
