"""Weight dependence of plasticity updates: hard, multiplicative soft and power-law soft bounds.

A bounds object turns a raw update ``Δw`` of the current weights ``w`` into
the update that is applied. Rules apply it to each update as it happens
(depression, then potentiation), so the weight dependence always reads the
weight as already updated by earlier events. The connection's own hard
bounds ``w_min``/``w_max`` apply afterwards in any case.

- :class:`HardBounds`: ``w + Δw`` is clipped to ``[w_min, w_max]``.
- :class:`SoftBounds` (multiplicative): potentiation is scaled by
  ``w_max - w`` and depression by ``w - w_min``, so a weight approaches its
  bounds but does not cross them.
- :class:`PowerBounds`: potentiation is scaled by ``(w_max - w) ** mu`` and
  depression by ``(w - w_min) ** mu``.

A bound left as ``None`` is taken from the connection's ``w_min``/``w_max``
when the rule is bound.

Examples:
    >>> import torch
    >>> SoftBounds(0.0, 1.0).limit(torch.tensor([0.9, 1.0]), torch.tensor([0.1, 0.1]))
    tensor([0.0100, 0.0000])
"""

from __future__ import annotations

import copy

import torch

from ember.learning.base import check_finite, check_positive


class Bounds:
    """Base class: the weight dependence of an update.

    Args:
        w_min: the lower weight bound, or ``None`` for the connection's ``w_min``.
        w_max: the upper weight bound, or ``None`` for the connection's ``w_max``.

    Raises:
        ValueError: if a bound is not finite or ``w_min`` exceeds ``w_max``.
    """

    #: Whether both bounds must be known (soft bounds scale by the distance to each).
    needs_both = False

    def __init__(self, w_min: float | None = None, w_max: float | None = None) -> None:
        self.w_min = None if w_min is None else check_finite("w_min", w_min)
        self.w_max = None if w_max is None else check_finite("w_max", w_max)
        self._check_order()

    def _check_order(self) -> None:
        if self.w_min is not None and self.w_max is not None and self.w_min > self.w_max:
            raise ValueError(f"w_min ({self.w_min}) must not exceed w_max ({self.w_max})")

    def resolve(self, connection) -> "Bounds":
        """Return a copy whose missing bounds are taken from ``connection``.

        Raises:
            ValueError: if a bound this kind needs is missing in both places.
        """
        resolved = copy.copy(self)
        if resolved.w_min is None:
            resolved.w_min = connection.w_min
        if resolved.w_max is None:
            resolved.w_max = connection.w_max
        if self.needs_both and (resolved.w_min is None or resolved.w_max is None):
            raise ValueError(
                f"{type(self).__name__} needs w_min and w_max; pass them to {type(self).__name__}(w_min, w_max) "
                "or give the connection w_min= and w_max="
            )
        resolved._check_order()
        return resolved

    def limit(self, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Return the update to apply to ``weight`` for the raw update ``delta`` (both in the weight's shape)."""
        raise NotImplementedError

    def _clip(self, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return torch.clamp(weight + delta, self.w_min, self.w_max) - weight

    def __repr__(self) -> str:
        return f"{type(self).__name__}(w_min={self.w_min}, w_max={self.w_max})"


class HardBounds(Bounds):
    """Clip the updated weight to ``[w_min, w_max]``; either bound may be ``None`` (no bound)."""

    def limit(self, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.w_min is None and self.w_max is None:
            return delta
        return self._clip(weight, delta)


class SoftBounds(Bounds):
    """Multiplicative soft bounds: ``Δw * (w_max - w)`` for potentiation, ``Δw * (w - w_min)`` for depression.

    The result is also clipped to ``[w_min, w_max]``, so a raw update larger
    than 1 cannot overshoot.
    """

    needs_both = True

    def limit(self, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        headroom = (self.w_max - weight).clamp(min=0.0)
        footroom = (weight - self.w_min).clamp(min=0.0)
        scaled = torch.where(delta > 0, delta * headroom, delta * footroom)
        return self._clip(weight, scaled)


class PowerBounds(Bounds):
    """Power-law soft bounds: ``Δw * (w_max - w) ** mu`` for potentiation, ``Δw * (w - w_min) ** mu`` for depression.

    Args:
        w_min: the lower bound, or ``None`` for the connection's.
        w_max: the upper bound, or ``None`` for the connection's.
        exponent: ``mu``, above 0; 1 gives :class:`SoftBounds`.
    """

    needs_both = True

    def __init__(self, w_min: float | None = None, w_max: float | None = None, exponent: float = 1.0) -> None:
        super().__init__(w_min, w_max)
        self.exponent = check_positive("exponent", exponent)

    def limit(self, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        headroom = (self.w_max - weight).clamp(min=0.0) ** self.exponent
        footroom = (weight - self.w_min).clamp(min=0.0) ** self.exponent
        scaled = torch.where(delta > 0, delta * headroom, delta * footroom)
        return self._clip(weight, scaled)

    def __repr__(self) -> str:
        return f"PowerBounds(w_min={self.w_min}, w_max={self.w_max}, exponent={self.exponent})"
