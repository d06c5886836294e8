"""2-D convolution with weights (and delays) shared across positions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ember.connections.base import Connection, Reduce, check_reduce


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) != v for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


class Conv2d(Connection):
    """2-D convolution from a ``(channels, height, width)`` node to ``(maps, out_height, out_width)``.

    Every kernel element is one synapse shared by all output positions, so
    weights and delays have the kernel's shape and a learning rule's update
    is summed over the positions that share it.

    Args:
        in_shape: presynaptic shape ``(channels, height, width)``.
        weight: kernel of shape ``(maps, channels, kernel_height, kernel_width)``.
        stride: step between output positions.
        padding: zero padding on each side.
        dilation: spacing between kernel elements.
        **kwargs: see :class:`~ember.connections.base.Connection`; a tensor
            ``delay`` has the kernel's shape.

    Shape:
        synapse layout for learning rules: ``(batch, maps, channels * kh * kw, positions)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        weight: torch.Tensor,
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        **kwargs,
    ) -> None:
        in_shape = tuple(int(s) for s in in_shape)
        weight = torch.as_tensor(weight)
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (channels, height, width), got {in_shape!r}")
        if weight.dim() != 4 or weight.shape[1] != in_shape[0]:
            raise ValueError(
                f"weight must have shape (maps, {in_shape[0]}, kernel_height, kernel_width), got {tuple(weight.shape)}"
            )
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        maps, _, kernel_h, kernel_w = weight.shape
        out_h = (in_shape[1] + 2 * self.padding[0] - self.dilation[0] * (kernel_h - 1) - 1) // self.stride[0] + 1
        out_w = (in_shape[2] + 2 * self.padding[1] - self.dilation[1] * (kernel_w - 1) - 1) // self.stride[1] + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"the kernel {tuple(weight.shape[2:])} does not fit the padded input {in_shape[1:]}")
        self.kernel_size = (kernel_h, kernel_w)
        self.positions = out_h * out_w
        super().__init__(in_shape, (maps, out_h, out_w), weight, **kwargs)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding, dilation=self.dilation)

    def _unfold(self, pre: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(pre, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        return patches

    def synaptic(self, pre: torch.Tensor) -> torch.Tensor:
        return self._unfold(pre).unsqueeze(1)

    def postsynaptic(self, post: torch.Tensor) -> torch.Tensor:
        return post.reshape(post.shape[0], post.shape[1], 1, self.positions)

    def per_synapse(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.reshape(1, parameter.shape[0], -1, 1)

    def fold(self, update: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        check_reduce(reduce)
        total = update.sum(-1).sum(0)
        total = total.expand(self.weight.shape[0], self.weight[0].numel()).reshape(self.weight.shape)
        return total / self.batch_size if reduce == "mean" else total

    def outer(self, pre: torch.Tensor, post: torch.Tensor, reduce: Reduce = "sum") -> torch.Tensor:
        check_reduce(reduce)
        patches = self._unfold(pre)
        post = post.reshape(post.shape[0], post.shape[1], self.positions)
        total = torch.einsum("bkl,bfl->fk", patches, post).reshape(self.weight.shape)
        return total / pre.shape[0] if reduce == "mean" else total

    @property
    def synapse_count(self) -> int:
        return int(self.weight.numel())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
