"""The base class of encoders that turn intensities into spike trains."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ember.core import Shape, Stateful, as_shape
from ember.random import step_generator
from ember.units import check_dt


class Encoder(Stateful):
    """Turns an intensity tensor into one step of spikes at a time.

    An encoder is bound to a unit shape and a batch size, either explicitly
    with :meth:`bind` (``ember.sources.EncodedInput`` does this) or by the
    first call of :meth:`step`. Its state belongs to one presentation of one
    batch of samples. A presentation starts at construction, at
    :meth:`bind`, at :meth:`restart` and at ``reset_state()``, and the
    encoder times its spikes by its own step counter ``elapsed`` from that
    start, not by the network's step index.

    All randomness comes from the ``torch.Generator`` passed to :meth:`step`,
    which the network seeds per step with ``ember.random.step_generator``, so
    the spikes of a run depend only on the seed, the stream and the steps.

    Subclasses implement :meth:`_prepare` (validate the intensities and
    precompute what does not change between steps) and :meth:`_emit` (one
    step of spikes). A subclass that keeps per-unit state declares it in
    :meth:`_register_unit_states`.

    Args:
        dt: the step length in ms.
        batch_size: the number of samples encoded side by side. Default 1;
            :meth:`bind` and the first :meth:`step` replace it.
        dtype: the floating point dtype of the spikes, ``torch.float32`` by
            default.
        device: where the state lives.

    Attributes:
        shape: the unit shape without the batch dimension, ``None`` until
            the encoder is bound.
        elapsed: the number of steps since the presentation started, an
            int64 scalar tensor.
    """

    def __init__(
        self,
        *,
        dt: float,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, dtype=dtype, device=device)
        self.dt = check_dt(dt)
        self.shape: Shape | None = None
        self.register_state("elapsed", (), 0, dtype=torch.int64, batched=False)
        # The last intensity tensor seen and what _prepare made of it. Holding a
        # reference keeps its memory from being reused by another tensor, so
        # identity plus the version counter detect a change reliably.
        self._prepared_source: torch.Tensor | None = None
        self._prepared_version = -1
        self._prepared: torch.Tensor | None = None
        self._prepared_target: tuple[torch.device, torch.dtype] | None = None

    def bind(self, shape: int | Sequence[int], batch_size: int | None = None) -> None:
        """Allocate the state for a unit shape and batch size and start a presentation.

        Args:
            shape: the unit shape without the batch dimension.
            batch_size: the number of samples, the current batch size by default.
        """
        if batch_size is not None:
            if int(batch_size) < 1:
                raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
            self.batch_size = int(batch_size)
        self.shape = as_shape(shape)
        self._register_unit_states(self.shape)
        self.restart()

    def restart(self) -> None:
        """Start a new presentation: clear the step counter and the per-unit state."""
        self.reset_own_state()

    def reset_own_state(self) -> None:
        super().reset_own_state()
        self._forget_prepared()

    def step(self, x: torch.Tensor, step: int, generator: torch.Generator | None) -> torch.Tensor:
        """Emit the spikes of one step.

        Args:
            x: the intensities, shape ``(B, *shape)``. Their meaning and unit
                depend on the encoder: a rate in Hz for Poisson encoders, a
                value in [0, 1] for latency encoders, any value of at least 0
                for rank-order encoders.
            step: the network's step index. Encoders time their spikes by
                their own counter :attr:`elapsed`, so this index only labels
                the step.
            generator: the random generator of this step, on the device of
                the state. Deterministic encoders accept ``None``.

        Shape:
            - x: ``(B, *shape)``
            - output: ``(B, *shape)``, 0.0 or 1.0 in the encoder's dtype.

        Returns:
            The spikes of this step.

        Raises:
            ValueError: if ``x`` does not match the bound shape and batch size,
                or its values are out of the encoder's range.
        """
        x = self._check_input(x)
        prepared = self._prepare_cached(x)
        spikes = self._emit(prepared, generator)
        self.elapsed = self.elapsed + 1
        return spikes

    @torch.no_grad()
    def encode(self, x: torch.Tensor, steps: int, seed: int = 0, *, stream: int = 0) -> torch.Tensor:
        """Encode a whole presentation of ``steps`` steps.

        The encoder is bound to the shape and batch size of ``x`` and
        restarted first. Step ``t`` draws from
        ``ember.random.step_generator(seed, stream, t, x.device)``, so an
        ``ember.sources.EncodedInput`` with the same seed and stream emits the
        same spikes when the network counts its steps from 0.

        Args:
            x: the intensities, shape ``(B, *shape)``.
            steps: the number of steps, at least 1.
            seed: the seed of the random streams. Default 0.
            stream: the stream number. Default 0.

        Shape:
            - x: ``(B, *shape)``
            - output: ``(steps, B, *shape)``

        Returns:
            The spike trains, 0.0 or 1.0 in the encoder's dtype.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int of at least 1, got {steps!r}")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (batch, *shape) with at least 2 dimensions, got {tuple(x.shape)}")
        self.to(device=x.device)
        self.bind(x.shape[1:], x.shape[0])
        frames = []
        for t in range(steps):
            generator = step_generator(seed, stream, t, x.device)
            frames.append(self.step(x, t, generator))
        return torch.stack(frames)

    def prepare(self, x: torch.Tensor) -> None:
        """Validate ``x`` now, so that bad intensities fail before the first step.

        Raises:
            ValueError: as :meth:`step` does.
        """
        self._prepare_cached(self._check_input(x))

    def _register_unit_states(self, shape: Shape) -> None:
        """Declare the per-unit state tensors for ``shape``; none by default."""

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``x`` (in the encoder's dtype and device) and precompute from it."""
        raise NotImplementedError

    def _emit(self, prepared: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Return the spikes of the current step from what :meth:`_prepare` returned."""
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of intensities, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (batch, *shape) with at least 2 dimensions, got {tuple(x.shape)}")
        if self.shape is None:
            self.bind(x.shape[1:], x.shape[0])
        expected = (self.batch_size, *self.shape)
        if tuple(x.shape) != expected:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but {type(self).__name__} is bound to {expected}; "
                "call bind(shape, batch_size) to encode another shape"
            )
        return x

    def _prepare_cached(self, x: torch.Tensor) -> torch.Tensor:
        stale = (
            self._prepared is None
            or x is not self._prepared_source
            or x._version != self._prepared_version
            or self._prepared_target != (self.device, self.dtype)
        )
        if stale:
            self._prepared = self._prepare(x.detach().to(device=self.device, dtype=self.dtype))
            self._prepared_source = x
            self._prepared_version = x._version
            self._prepared_target = (self.device, self.dtype)
        return self._prepared

    def _forget_prepared(self) -> None:
        self._prepared_source = None
        self._prepared_version = -1
        self._prepared = None

    def extra_repr(self) -> str:
        return f"dt={self.dt}"
