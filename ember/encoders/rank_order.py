"""Rank-order coding: the order of the intensities becomes the order of the spikes."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ember.encoders.base import Encoder
from ember.units import to_steps

TieRule = Literal["index", "shared"]


def rank_descending(values: torch.Tensor, ties: TieRule = "index") -> torch.Tensor:
    """Rank each row of ``values`` from the largest (rank 0) down.

    Args:
        values: shape ``(B, N)``.
        ties: ``"index"`` gives equal values consecutive ranks, lower column
            first, so each rank is used once per row. ``"shared"`` gives equal
            values the same rank and leaves no gaps (dense ranking).

    Returns:
        An int64 tensor of shape ``(B, N)``.
    """
    ordered, order = torch.sort(values, dim=1, descending=True, stable=True)
    if ties == "index":
        ranks_in_order = torch.arange(values.shape[1], device=values.device).expand_as(order)
    else:
        starts_new_value = torch.ones_like(ordered, dtype=torch.int64)
        starts_new_value[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).to(torch.int64)
        ranks_in_order = torch.cumsum(starts_new_value, dim=1) - 1
    return torch.empty_like(order).scatter_(1, order, ranks_in_order.contiguous())


class RankOrderEncoder(Encoder):
    """Encodes intensities as one spike per unit, ordered from strongest to weakest.

    Within each sample, the unit with the highest intensity fires at step 0,
    the unit of rank ``k`` at step ``k * interval_ms / dt``. Units with
    intensity 0 never fire, so a sample with ``m`` nonzero units emits
    exactly ``m`` spikes. Steps count from the start of the presentation
    (see :class:`~ember.encoders.base.Encoder`); a presentation that should
    hold every spike needs ``(N - 1) * interval_ms / dt + 1`` steps for ``N``
    units per sample.

    Args:
        dt: the step length in ms.
        interval_ms: the time between consecutive ranks in ms, a whole
            number of steps of at least one step. Default ``dt``.
        ties: how equal intensities are ranked. ``"index"`` (default) orders
            them by flat unit index, lower first, so no two units of a sample
            fire in the same step. ``"shared"`` lets them fire together and
            gives the next smaller intensity the next rank.
        batch_size: the number of samples encoded side by side. Default 1.
        dtype: the dtype of the spikes.
        device: where the state lives.

    Shape:
        - x: ``(B, *shape)``, intensities of at least 0.
        - output: ``(B, *shape)``, 0.0 or 1.0.

    Examples:
        >>> encoder = RankOrderEncoder(dt=1.0)
        >>> spikes = encoder.encode(torch.tensor([[0.2, 0.9, 0.0, 0.5]]), steps=4)
        >>> spikes[:, 0].nonzero().tolist()  # (step, unit) pairs
        [[0, 1], [1, 3], [2, 0]]
    """

    def __init__(
        self,
        *,
        dt: float,
        interval_ms: float | None = None,
        ties: TieRule = "index",
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        if ties not in get_args(TieRule):
            raise ValueError(f"ties must be one of {get_args(TieRule)}, got {ties!r}")
        self.interval_ms = self.dt if interval_ms is None else float(interval_ms)
        self.interval_steps = to_steps(self.interval_ms, self.dt, name="interval_ms")
        if self.interval_steps < 1:
            raise ValueError(f"interval_ms must be at least one step of {self.dt} ms, got {interval_ms!r} ms")
        self.ties: TieRule = ties

    def spike_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Return the step of each unit's spike, or -1 for units that never fire.

        Args:
            x: intensities of at least 0, shape ``(B, *shape)``.

        Returns:
            An int64 tensor of the shape of ``x``.
        """
        if torch.isnan(x).any():
            raise ValueError("RankOrderEncoder intensities must not be NaN; check the input data")
        low = float(x.min())
        if low < 0.0:
            raise ValueError(f"RankOrderEncoder intensities must be at least 0, got a minimum of {low}")
        flat = x.reshape(x.shape[0], -1)
        steps = rank_descending(flat, self.ties) * self.interval_steps
        steps = torch.where(flat > 0.0, steps, torch.full_like(steps, -1))
        return steps.reshape(x.shape)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.spike_steps(x)

    def _emit(self, spike_steps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (spike_steps == self.elapsed).to(self.dtype)

    def extra_repr(self) -> str:
        settings = [f"dt={self.dt}"]
        if self.interval_steps != 1:
            settings.append(f"interval_ms={self.interval_ms}")
        if self.ties != "index":
            settings.append(f"ties={self.ties!r}")
        return ", ".join(settings)
