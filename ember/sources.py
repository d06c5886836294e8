"""Input sources: nodes without inputs that emit spikes, or currents, each step.

Every source is an :class:`ember.core.Node` whose ``step(step_index)`` returns
the spikes of that step, shape ``(B, *shape)``. The network calls it once per
step, before the nodes that the source drives.

Sources read one of two clocks, and each class documents which:

- :class:`EncodedInput` and :class:`PatternInput` present data. They count
  steps from the last ``set_data()`` or ``reset_state()``, so every sample
  starts at step 0 of its presentation whatever the network's step counter
  is. ``step_index`` only seeds their random draws.
- :class:`SpikeGenerator` and :class:`CurrentInput` describe a whole run in
  ms. They read ``step_index`` as the simulation step, step 0 being time 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from bisect import bisect_left, bisect_right
from typing import Literal, Union, get_args

import numpy as np
import torch

from ember.core import Node, broadcast_shapes
from ember.encoders.base import Encoder
from ember.random import step_generator
from ember.units import STEP_RTOL, to_steps

Rounding = Literal["error", "nearest"]
AfterEnd = Literal["silent", "repeat", "error"]
CurrentFunction = Callable[[int], Union[torch.Tensor, float]]


class EncodedInput(Node):
    """Emits the spikes of an encoder applied to a data tensor.

    The network assigns :attr:`seed` and :attr:`stream`; step ``t`` draws from
    ``ember.random.step_generator(seed, stream, t, device)``. With the same
    seed and stream, a network that counts its steps from 0 reproduces
    ``encoder.encode(x, steps, seed, stream=stream)`` exactly.

    The encoder becomes a child module: it follows ``.to()``, and
    ``reset_state()`` and ``set_batch_size()`` reach it. Give each source its
    own encoder, because the encoder keeps per-sample state.

    Args:
        shape: the unit shape without the batch dimension.
        encoder: the encoder, for example ``PoissonEncoder(dt=dt)``. Its
            ``dt`` must equal ``dt``.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side. Default 1.
        seed: the seed of the random streams. Default 0.
        stream: this source's stream number. Default 0.
        dtype: the dtype of the data and the spikes.
        device: where the data and state live.

    Attributes:
        data: the intensities set by :meth:`set_data`, shape
            ``(batch_size, *shape)``, or ``None`` before the first call.

    Examples:
        >>> from ember.encoders import PoissonEncoder
        >>> source = EncodedInput((2, 2), PoissonEncoder(dt=1.0), dt=1.0)
        >>> source.set_data(torch.full((1, 2, 2), 1000.0))
        >>> source.step(0).tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        encoder: Encoder,
        dt: float,
        *,
        batch_size: int = 1,
        seed: int = 0,
        stream: int = 0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        if not isinstance(encoder, Encoder):
            raise TypeError(f"encoder must be an ember.encoders.Encoder, got {type(encoder).__name__}")
        if abs(encoder.dt - self.dt) > STEP_RTOL * self.dt:
            raise ValueError(f"encoder.dt = {encoder.dt} ms differs from the source's dt = {self.dt} ms; use one dt")
        self.seed = int(seed)
        self.stream = int(stream)
        self.encoder = encoder.to(device=self.device, dtype=self.dtype)
        self.encoder.bind(self.shape, self.batch_size)
        self.register_buffer("data", None, persistent=False)

    def set_data(self, x: torch.Tensor, *, restart: bool = True) -> None:
        """Set the intensities to encode from the next step on.

        Args:
            x: the intensities, shape ``(batch_size, *shape)``, in the unit the
                encoder expects (Hz for Poisson encoders). Any numeric dtype;
                it is converted to the source's dtype.
            restart: whether a new presentation starts: the encoder's step
                counter and state are cleared. Default True. Pass False to
                change the data in the middle of a presentation, for example
                after loading a checkpoint.

        Raises:
            ValueError: if the shape does not match, or the encoder rejects
                the values.
        """
        expected = (self.batch_size, *self.shape)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"set_data expects a tensor of shape {expected} (batch_size, *shape), got {shape}; "
                "call set_batch_size() first to change the batch size"
            )
        self.data = x.detach().to(device=self.device, dtype=self.dtype)
        self.encoder.prepare(self.data)
        if restart:
            self.encoder.restart()

    def step(self, step_index: int) -> torch.Tensor:
        """Emit the spikes of network step ``step_index``.

        Raises:
            RuntimeError: if :meth:`set_data` was not called for the current
                batch size.
        """
        if self.data is None or self.data.shape[0] != self.batch_size:
            raise RuntimeError(
                f"EncodedInput has no data for batch size {self.batch_size}; call set_data(x) before stepping"
            )
        generator = step_generator(self.seed, self.stream, step_index, self.device)
        self.spikes = self.encoder.step(self.data, step_index, generator)
        return self.spikes

    def extra_repr(self) -> str:
        return f"shape={self.shape}, dt={self.dt}, stream={self.stream}"


def times_to_steps(times_ms: torch.Tensor, dt: float, rounding: Rounding = "error") -> torch.Tensor:
    """Convert spike times in ms to step indices.

    A time ``t`` is at step ``t / dt``. Values within a relative tolerance of
    1e-6 of a whole step snap to it, as in :func:`ember.units.to_steps`, so
    0.3 ms at dt = 0.1 ms is step 3.

    Args:
        times_ms: spike times in ms, at least 0, shape ``(E,)``.
        dt: the step length in ms.
        rounding: what a time between two steps does: ``"error"`` (default)
            raises, ``"nearest"`` moves it to the nearest step, and a time
            halfway between two steps (within the same tolerance) to the
            later one.

    Returns:
        int64 step indices, shape ``(E,)``.

    Raises:
        ValueError: for a negative or non-finite time, or a fractional one
            under ``rounding="error"``; the message names the first such event.
    """
    if rounding not in get_args(Rounding):
        raise ValueError(f"rounding must be one of {get_args(Rounding)}, got {rounding!r}")
    times = times_ms.to(torch.float64)
    bad = ~torch.isfinite(times) | (times < 0.0)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"times_ms[{first}] = {float(times[first])} ms; spike times must be finite and at least 0 ms")
    ratio = times / dt
    nearest = torch.round(ratio)
    fractional = (ratio - nearest).abs() > STEP_RTOL * torch.clamp(nearest.abs(), min=1.0)
    if rounding == "error" and fractional.any():
        first = int(fractional.nonzero()[0, 0])
        raise ValueError(
            f"times_ms[{first}] = {float(times[first])} ms is not a whole number of steps at dt = {dt} ms "
            f"({float(ratio[first]):.6g} steps); use multiples of dt or pass rounding='nearest'"
        )
    # A time within the tolerance of halfway between two steps counts as halfway.
    halfway = torch.floor(ratio) + 0.5
    is_halfway = (ratio - halfway).abs() <= STEP_RTOL * torch.clamp(halfway.abs(), min=1.0)
    rounded = torch.where(is_halfway, torch.ceil(ratio), torch.floor(ratio + 0.5))
    return torch.where(fractional, rounded, nearest).to(torch.int64)


class SpikeGenerator(Node):
    """Emits spikes at explicit times: event ``k`` is unit ``indices[k]`` at ``times_ms[k]``.

    Times are simulation times: the spike of time ``t`` ms is emitted at
    network step ``t / dt`` (see :func:`times_to_steps` for the rounding). A
    unit spikes at most once per step per sample, so two events that land in
    the same step, unit and sample are rejected.

    Args:
        shape: the unit shape without the batch dimension.
        times_ms: spike times in ms, at least 0, one per event.
        indices: the flat unit index of each event, in ``[0, prod(shape))``.
        dt: the step length in ms.
        sample: the batch index of each event, or ``None`` (default) to emit
            every event in every sample of the batch.
        batch_size: the number of samples simulated side by side. Default 1.
        rounding: how a time between two steps is treated, ``"error"``
            (default) or ``"nearest"``; see :func:`times_to_steps`.
        dtype: the dtype of the spikes.
        device: where the events and state live.

    Attributes:
        num_steps: the number of steps that contain every event (last step + 1),
            0 when there are no events.

    Examples:
        >>> source = SpikeGenerator(3, times_ms=[0.0, 0.2, 0.2], indices=[0, 1, 2], dt=0.1)
        >>> [source.step(t).tolist() for t in range(3)]
        [[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 1.0, 1.0]]]
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        times_ms: Sequence[float] | torch.Tensor | np.ndarray,
        indices: Sequence[int] | torch.Tensor | np.ndarray,
        dt: float,
        sample: Sequence[int] | torch.Tensor | np.ndarray | None = None,
        *,
        batch_size: int = 1,
        rounding: Rounding = "error",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        times = torch.as_tensor(_as_array(times_ms).astype(np.float64)).reshape(-1)
        flat = _as_index_tensor(indices, "indices")
        if flat.shape != times.shape:
            raise ValueError(f"times_ms has {times.numel()} events but indices has {flat.numel()}; give one index per time")
        _check_range(flat, self.size, "indices", f"the number of units {self.size} of shape {self.shape}")
        samples = None
        if sample is not None:
            samples = _as_index_tensor(sample, "sample")
            if samples.shape != times.shape:
                raise ValueError(f"sample has {samples.numel()} events but times_ms has {times.numel()}; give one per event")
            _check_range(samples, self.batch_size, "sample", f"batch_size {self.batch_size}")
        steps = times_to_steps(times, self.dt, rounding)
        _reject_duplicates(steps, flat, samples, times)

        order = torch.argsort(steps, stable=True)
        self._event_steps: list[int] = steps[order].tolist()
        self.register_buffer("event_index", flat[order].to(self.device), persistent=False)
        sample_buffer = None if samples is None else samples[order].to(self.device)
        self.register_buffer("event_sample", sample_buffer, persistent=False)
        self.num_steps = self._event_steps[-1] + 1 if self._event_steps else 0
        self._max_sample = -1 if samples is None or samples.numel() == 0 else int(samples.max())

    def step(self, step_index: int) -> torch.Tensor:
        """Emit the spikes of network step ``step_index``.

        Raises:
            RuntimeError: if the batch size was lowered below an event's sample index.
        """
        if self._max_sample >= self.batch_size:
            raise RuntimeError(
                f"SpikeGenerator has events for sample {self._max_sample} but the batch size is now "
                f"{self.batch_size}; keep the batch size above every sample index"
            )
        first = bisect_left(self._event_steps, step_index)
        last = bisect_right(self._event_steps, step_index)
        spikes = torch.zeros((self.batch_size, self.size), device=self.device, dtype=self.dtype)
        if last > first:
            units = self.event_index[first:last]
            if self.event_sample is None:
                spikes[:, units] = 1.0
            else:
                spikes[self.event_sample[first:last], units] = 1.0
        self.spikes = spikes.reshape(self.batch_size, *self.shape)
        return self.spikes

    def extra_repr(self) -> str:
        return f"shape={self.shape}, dt={self.dt}, events={len(self._event_steps)}"


def _as_array(values: Sequence[float] | torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy().reshape(-1)
    return np.asarray(values).reshape(-1)


def _as_index_tensor(values: Sequence[int] | torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    array = _as_array(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.rint(array)):
            raise ValueError(f"{name} must be whole numbers, got values such as {array[array != np.rint(array)][:3]}")
    return torch.as_tensor(array.astype(np.int64))


def _check_range(values: torch.Tensor, upper: int, name: str, upper_source: str) -> None:
    bad = (values < 0) | (values >= upper)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}[{first}] = {int(values[first])} is outside [0, {upper}), set by {upper_source}")


def _reject_duplicates(steps: torch.Tensor, units: torch.Tensor, samples: torch.Tensor | None, times: torch.Tensor) -> None:
    keys = torch.stack([steps, units] if samples is None else [steps, units, samples], dim=1)
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    repeated = counts[inverse] > 1
    if repeated.any():
        events = repeated.nonzero()[:, 0].tolist()
        first = events[0]
        twin = next(k for k in events[1:] if bool((keys[k] == keys[first]).all()))
        raise ValueError(
            f"events {first} and {twin} (times {float(times[first])} and {float(times[twin])} ms) put two spikes "
            f"on unit {int(units[first])} in step {int(steps[first])}; a unit spikes at most once per step"
        )


class PatternInput(Node):
    """Replays a precomputed spike tensor, one frame per step.

    Frame ``k`` of the tensor is emitted at step ``k`` of the presentation,
    counted from the last :meth:`set_data` or ``reset_state()``, so each
    sample of a data set of spike trains plays from its start.

    Args:
        shape: the unit shape without the batch dimension.
        dt: the step length in ms.
        spikes: the spike trains, shape ``(T, batch_size, *shape)``, values 0
            or 1 of any dtype, or ``None`` to set them later with
            :meth:`set_data`.
        batch_size: the number of samples simulated side by side. Default 1.
        after_end: what the steps after the last frame emit: ``"silent"``
            (default) nothing, ``"repeat"`` the tensor again from frame 0,
            ``"error"`` a ``RuntimeError``.
        dtype: the dtype of the spikes.
        device: where the spikes and state live.

    Attributes:
        elapsed: the number of steps since the presentation started, an
            int64 scalar tensor.

    Examples:
        >>> frames = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (T=2, B=1, 2)
        >>> source = PatternInput(2, dt=1.0, spikes=frames, after_end="repeat")
        >>> [source.step(t).tolist() for t in range(3)]
        [[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]]
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        dt: float,
        spikes: torch.Tensor | None = None,
        *,
        batch_size: int = 1,
        after_end: AfterEnd = "silent",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        if after_end not in get_args(AfterEnd):
            raise ValueError(f"after_end must be one of {get_args(AfterEnd)}, got {after_end!r}")
        self.after_end: AfterEnd = after_end
        self.register_state("elapsed", (), 0, dtype=torch.int64, batched=False)
        self.register_buffer("data", None, persistent=False)
        if spikes is not None:
            self.set_data(spikes)

    @property
    def num_steps(self) -> int:
        """The number of frames ``T`` of the current spike tensor, 0 without one."""
        return 0 if self.data is None else int(self.data.shape[0])

    def set_data(self, spikes: torch.Tensor, *, restart: bool = True) -> None:
        """Set the spike trains to replay.

        Args:
            spikes: shape ``(T, batch_size, *shape)`` with ``T >= 1``, values 0 or 1.
            restart: whether the replay starts again at frame 0. Default True.

        Raises:
            ValueError: if the shape does not match or a value is not 0 or 1.
        """
        expected = (self.batch_size, *self.shape)
        if not isinstance(spikes, torch.Tensor) or spikes.dim() != len(expected) + 1 or tuple(spikes.shape[1:]) != expected:
            shape = tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes).__name__
            raise ValueError(f"spikes must have shape (T, {', '.join(map(str, expected))}), got {shape}")
        if spikes.shape[0] < 1:
            raise ValueError("spikes must contain at least one frame (T >= 1)")
        if not bool(((spikes == 0) | (spikes == 1)).all()):
            raise ValueError("spikes must contain only 0 and 1")
        self.data = spikes.detach().to(device=self.device, dtype=self.dtype)
        if restart:
            self.reset_own_state()

    def step(self, step_index: int) -> torch.Tensor:
        """Emit the next frame of the presentation; ``step_index`` is not used."""
        if self.data is None or self.data.shape[1] != self.batch_size:
            raise RuntimeError(
                f"PatternInput has no spikes for batch size {self.batch_size}; call set_data(spikes) before stepping"
            )
        frames = self.data.shape[0]
        if self.after_end == "repeat":
            frame = self.data.index_select(0, (self.elapsed % frames).reshape(1))[0]
        elif self.after_end == "silent":
            inside = (self.elapsed < frames).to(self.dtype)
            frame = self.data.index_select(0, self.elapsed.clamp(max=frames - 1).reshape(1))[0] * inside
        else:
            index = int(self.elapsed)
            if index >= frames:
                raise RuntimeError(
                    f"PatternInput ran past its {frames} frames at presentation step {index}; "
                    "run fewer steps or pass after_end='silent' or 'repeat'"
                )
            frame = self.data[index]
        self.elapsed = self.elapsed + 1
        self.spikes = frame
        return self.spikes

    def extra_repr(self) -> str:
        settings = f"shape={self.shape}, dt={self.dt}"
        return settings if self.after_end == "silent" else f"{settings}, after_end={self.after_end!r}"


class CurrentInput(Node):
    """Injects a current in nA into a population; emits no spikes.

    How the network uses it: for every ``CurrentInput`` attached to a
    population, the network calls :meth:`current` with the network step
    index. It adds the result to the ``current`` argument (nA) of the
    population's ``step(current, jump)`` in the same step, before the
    population integrates. The input must have the population's shape and
    batch size. :meth:`step` exists for the ``Node`` contract and returns
    all-zero spikes.

    The current is ``current_nA`` (or ``current_nA(step)`` for a callable)
    for the steps from ``start_ms / dt`` up to but excluding ``stop_ms / dt``
    and 0 outside them. Both times must be whole numbers of steps.

    Args:
        shape: the unit shape without the batch dimension.
        current_nA: a number or a tensor broadcastable to
            ``(batch_size, *shape)`` in nA, or a callable that takes the
            network step index and returns such a value.
        dt: the step length in ms.
        start_ms: when the current switches on, in ms. Default 0.
        stop_ms: when it switches off, in ms, or ``None`` (default) for never.
        batch_size: the number of samples simulated side by side. Default 1.
        dtype: the dtype of the current.
        device: where the current lives.

    Examples:
        >>> pulse = CurrentInput(2, 0.5, dt=0.1, start_ms=1.0, stop_ms=2.0)
        >>> pulse.current(9).tolist(), pulse.current(10).tolist(), pulse.current(20).tolist()
        ([[0.0, 0.0]], [[0.5, 0.5]], [[0.0, 0.0]])
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        current_nA: float | torch.Tensor | CurrentFunction,
        dt: float,
        *,
        start_ms: float = 0.0,
        stop_ms: float | None = None,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        self.start_step = to_steps(start_ms, self.dt, name="start_ms")
        self.stop_step = None if stop_ms is None else to_steps(stop_ms, self.dt, name="stop_ms")
        if self.stop_step is not None and self.stop_step < self.start_step:
            raise ValueError(f"stop_ms = {stop_ms} ms is before start_ms = {start_ms} ms")
        self.function: CurrentFunction | None = None
        self.register_buffer("amplitude", None, persistent=False)
        if callable(current_nA):
            self.function = current_nA
        else:
            amplitude = torch.as_tensor(current_nA, dtype=self.dtype, device=self.device)
            if not bool(torch.isfinite(amplitude).all()):
                raise ValueError("current_nA must contain only finite values in nA")
            self.amplitude = self._broadcast(amplitude, "current_nA")

    def current(self, step: int) -> torch.Tensor:
        """Return the current of network step ``step``.

        Returns:
            The current in nA, shape ``(batch_size, *shape)``. It may be a
            broadcast view, so do not modify it in place.

        Raises:
            ValueError: if the constant or the callable's value does not
                broadcast to ``(batch_size, *shape)``.
        """
        if step < self.start_step or (self.stop_step is not None and step >= self.stop_step):
            return torch.zeros((self.batch_size, *self.shape), device=self.device, dtype=self.dtype)
        if self.function is None:
            return self._broadcast(self.amplitude, "current_nA")
        value = torch.as_tensor(self.function(step), dtype=self.dtype, device=self.device)
        return self._broadcast(value, f"current_nA({step})")

    def step(self, step_index: int) -> torch.Tensor:
        """Return the all-zero spikes of this source; the current comes from :meth:`current`."""
        return self.spikes

    def _broadcast(self, value: torch.Tensor, name: str) -> torch.Tensor:
        target = (self.batch_size, *self.shape)
        try:
            broadcast = broadcast_shapes(value.shape, target)
        except ValueError:
            broadcast = None
        if broadcast != target:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, which does not broadcast to {target} (batch_size, *shape)"
            )
        return value.expand(target)

    def extra_repr(self) -> str:
        window = f", start_step={self.start_step}, stop_step={self.stop_step}" if self.start_step or self.stop_step else ""
        return f"shape={self.shape}, dt={self.dt}{window}"
