"""Delta synapses: each arriving spike acts within its step."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ember.synapses.base import Synapse

DeltaMode = Literal["voltage", "current"]


class Delta(Synapse):
    """Instantaneous synapses: no kinetics and no state.

    - ``mode="voltage"`` (default): the arrived weights are a jump of the
      membrane potential in mV, added after the step's integration.
    - ``mode="current"``: the arrived weights are a charge in pC delivered
      evenly over the step, the current ``I = q / dt`` in nA.

    Args:
        mode: ``"voltage"`` or ``"current"``.
        dt: the step length in ms; needed in ``"current"`` mode, or given to
            :meth:`bind`.
        dtype: the floating point dtype.
        device: where the module lives.

    Shape:
        ``arrived`` and ``v``: ``(batch_size, *post_shape)``; the current or
        jump returned has the same shape.

    Raises:
        ValueError: for a ``mode`` that is not ``"voltage"`` or ``"current"``.

    Examples:
        >>> import torch
        >>> synapse = Delta(mode="current", dt=0.5)
        >>> synapse.bind(2, 1)
        >>> synapse(torch.tensor([[1.0, 0.25]]), torch.zeros(1, 2))
        (tensor([[2.0000, 0.5000]]), None)
    """

    def __init__(
        self,
        mode: DeltaMode = "voltage",
        *,
        dt: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dt=dt, dtype=dtype, device=device)
        if mode not in get_args(DeltaMode):
            raise ValueError(f"mode of Delta must be one of {', '.join(map(repr, get_args(DeltaMode)))}, got {mode!r}")
        self.mode = mode

    @property
    def input_unit(self) -> str:  # type: ignore[override]
        """mV in voltage mode, pC in current mode."""
        return "mV" if self.mode == "voltage" else "pC"

    def forward(self, arrived: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        self._check_arrived(arrived)
        if self.mode == "voltage":
            return None, arrived
        return arrived / self._step_length(), None

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + ("" if self.dt is None else f", dt={self.dt}")
