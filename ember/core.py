"""Base classes for everything that keeps per-sample state across steps.

A :class:`Stateful` module declares each state tensor once with
:meth:`Stateful.register_state`. The tensor is a persistent buffer of shape
``(batch_size, *shape)``, so ``state_dict()`` saves it, ``.to(device)`` moves
it, :meth:`Stateful.reset_state` refills it and :meth:`Stateful.set_batch_size`
reallocates it, recursively through child modules.

A :class:`Node` is a :class:`Stateful` group of units that emits spikes every
step: a neuron population or an input source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

Shape = tuple[int, ...]
Fill = Union[float, bool, Callable[[], torch.Tensor]]


def as_shape(shape: int | Sequence[int], *, name: str = "shape") -> Shape:
    """Normalise an int or a sequence of ints into a shape tuple of positive sizes."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(size) for size in shape)
    if not shape or any(size <= 0 for size in shape):
        raise ValueError(f"{name} must be one or more sizes above 0, got {shape!r}")
    return shape


def broadcast_shapes(*shapes: Sequence[int]) -> Shape:
    """Return the shape that tensors of ``shapes`` broadcast to, by NumPy's rules.

    The same result as ``torch.broadcast_shapes``, which imports sympy (about
    40 MB and half a second) on first use.

    Raises:
        ValueError: if two sizes of one dimension differ and neither is 1.
    """
    result: list[int] = []
    for shape in shapes:
        sizes = [int(size) for size in shape]
        if len(sizes) > len(result):
            result = [1] * (len(sizes) - len(result)) + result
        for offset, size in enumerate(reversed(sizes), start=1):
            current = result[-offset]
            if size != current and size != 1 and current != 1:
                raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast: size {size} against {current}")
            if current == 1:
                result[-offset] = size
    return tuple(result)


@dataclass
class _StateSpec:
    shape: Shape
    fill: Fill
    dtype: torch.dtype | None
    batched: bool


class Stateful(nn.Module):
    """A module with per-sample state tensors that are saved, moved and reset together.

    Args:
        batch_size: the number of samples simulated side by side, at least 1.
        dtype: the floating point dtype of the state, ``torch.float32`` by default.
        device: where the state lives.
    """

    def __init__(
        self,
        *,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self._state_specs: dict[str, _StateSpec] = {}
        # An empty buffer that follows .to() so new state lands on the right device and dtype.
        self.register_buffer("_anchor", torch.empty(0, dtype=dtype or torch.float32, device=device), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def register_state(
        self,
        name: str,
        shape: Sequence[int],
        fill: Fill = 0.0,
        *,
        dtype: torch.dtype | None = None,
        batched: bool = True,
    ) -> None:
        """Declare a state tensor and allocate it.

        Args:
            name: the attribute name.
            shape: the shape without the batch dimension.
            fill: the reset value: a number, or a callable that returns a tensor
                broadcastable to the state's shape (for per-unit rest values).
            dtype: the dtype, the module's floating point dtype by default.
            batched: whether the tensor has a leading batch dimension.
        """
        self._state_specs[name] = _StateSpec(tuple(int(s) for s in shape), fill, dtype, batched)
        self.register_buffer(name, self._new_state(name))

    def _new_state(self, name: str) -> torch.Tensor:
        spec = self._state_specs[name]
        shape = ((self.batch_size,) if spec.batched else ()) + spec.shape
        dtype = spec.dtype or self.dtype
        if callable(spec.fill):
            value = torch.as_tensor(spec.fill()).detach().to(device=self.device, dtype=dtype)
            return value.expand(shape).clone()
        return torch.full(shape, spec.fill, dtype=dtype, device=self.device)

    def reset_own_state(self) -> None:
        """Refill this module's own state tensors, not its children's."""
        for name in self._state_specs:
            setattr(self, name, self._new_state(name))

    def reset_state(self) -> None:
        """Refill every state tensor of this module and of its children."""
        for module in self.modules():
            if isinstance(module, Stateful):
                module.reset_own_state()

    def set_batch_size(self, batch_size: int) -> None:
        """Reallocate every state tensor, here and in children, for a new batch size."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        for module in self.modules():
            if isinstance(module, Stateful):
                module.batch_size = int(batch_size)
                module.reset_own_state()

    def detach_own_state(self) -> None:
        """Cut the autograd history of this module's own state tensors, not its children's."""
        for name in self._state_specs:
            setattr(self, name, getattr(self, name).detach())

    def detach_state(self) -> None:
        """Cut the autograd history of every state tensor (for truncated BPTT)."""
        for module in self.modules():
            if isinstance(module, Stateful):
                module.detach_own_state()


class Node(Stateful):
    """A group of units that emits spikes each step.

    Args:
        shape: the shape of the group without the batch dimension, for example
            ``100`` or ``(1, 28, 28)``.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side.

    Attributes:
        spikes: the spikes of the current step, shape ``(batch_size, *shape)``,
            0.0 or 1.0 in the state dtype. Under autograd they carry the
            surrogate gradient of the spike function.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        from ember.units import check_dt

        super().__init__(batch_size=batch_size, dtype=dtype, device=device)
        self.shape: Shape = as_shape(shape)
        self.dt = check_dt(dt)
        self.register_state("spikes", self.shape, 0.0)

    @property
    def size(self) -> int:
        """The number of units, the product of ``shape``."""
        size = 1
        for dim in self.shape:
            size *= dim
        return size
