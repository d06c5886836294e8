"""Monitors with bounded memory: spike events, sampled state, and reducers.

Monitors record after every network step. None of them keeps a dense
``steps x units`` raster:

* :class:`SpikeMonitor` stores events ``(step, index, sample)`` in a
  preallocated buffer of ``chunk_size`` events. A full buffer is handed to
  the ``sink`` callback as a :class:`SpikeEvents` (the worker streams these to
  the database) or, without a sink, kept in host memory up to ``max_events``.
* :class:`StateMonitor` keeps every ``every``-th value of a state tensor in a
  ring buffer of ``capacity`` records.
* :class:`SpikeCountMonitor`, :class:`RateMonitor` (exponential moving
  average) and :class:`TraceMonitor` reduce spikes to one tensor per unit.

Monitors are never cleared by ``Network.reset_state()``; call ``clear()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ember.core import Stateful


@dataclass
class SpikeEvents:
    """A block of spike events of one monitor, in the order they were recorded; ``sample`` is the position in the batch.

    Attributes:
        step: step index of each event, int64 ``(n,)``.
        index: flat unit index within the population, int64 ``(n,)``.
        sample: batch sample of each event, int64 ``(n,)``.
        dt: the step length in ms.
        shape: the population shape.
    """

    step: np.ndarray
    index: np.ndarray
    sample: np.ndarray
    dt: float
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @staticmethod
    def concatenate(chunks: list["SpikeEvents"], dt: float, shape: tuple[int, ...]) -> "SpikeEvents":
        """Join chunks into one, or return an empty chunk."""
        if not chunks:
            empty = np.zeros(0, dtype=np.int64)
            return SpikeEvents(empty, empty.copy(), empty.copy(), dt, shape)
        return SpikeEvents(
            np.concatenate([c.step for c in chunks]),
            np.concatenate([c.index for c in chunks]),
            np.concatenate([c.sample for c in chunks]),
            dt,
            shape,
        )


class Monitor(Stateful):
    """Base class: a monitor watches one node (or connection) attribute of a network."""

    is_monitor = True

    def __init__(self, target: str, attribute: str = "spikes") -> None:
        super().__init__()
        self.target = target
        self.attribute = attribute
        self.owner_ref: list = []  # a list, so neither owner nor network becomes a child module

    def bind(self, network) -> None:
        """Attach to ``network``; raise if the target or attribute does not exist."""
        owner = network.nodes[self.target] if self.target in network.nodes else None
        if owner is None and self.target in network.connections:
            owner = network.connections[self.target]
        if owner is None:
            raise ValueError(f"monitor target {self.target!r} not found among nodes or connections")
        if not isinstance(getattr(owner, self.attribute, None), torch.Tensor):
            raise ValueError(f"{self.target!r} has no tensor attribute {self.attribute!r} to monitor")
        self.owner_ref = [owner]
        self.set_batch_size(network.batch_size)
        self._allocate(owner)

    @property
    def owner(self):
        return self.owner_ref[0]

    def _allocate(self, owner) -> None:
        """Allocate buffers once the watched tensor's shape is known."""

    def record(self, step: int) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        """Drop everything recorded so far."""
        self.reset_own_state()


class SpikeMonitor(Monitor):
    """Record spike events of a node as ``(step, index, sample)``.

    Args:
        target: the node's name.
        chunk_size: events held on the device before a flush; the memory
            bound is ``3 * 8 * chunk_size`` bytes on the device.
        sink: called with each full :class:`SpikeEvents` (and the remainder on
            :meth:`flush`). Without a sink, chunks are kept in host memory.
        max_events: the maximum number of events kept without a sink; more raise
            ``RuntimeError`` rather than grow without bound. ``None``: no limit.
        start_step: first step recorded. stop_step: first step not recorded.
    """

    def __init__(
        self,
        target: str,
        *,
        chunk_size: int = 65536,
        sink: Callable[[SpikeEvents], None] | None = None,
        max_events: int | None = None,
        start_step: int = 0,
        stop_step: int | None = None,
    ) -> None:
        super().__init__(target, "spikes")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 event, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.sink = sink
        self.max_events = max_events
        self.start_step = int(start_step)
        self.stop_step = stop_step
        self.chunks: list[SpikeEvents] = []
        self.kept_events = 0
        self.register_state("events", (3, self.chunk_size), 0, dtype=torch.long, batched=False)
        self.register_state("filled", (), 0, dtype=torch.long, batched=False)

    def _allocate(self, owner) -> None:
        self.shape = tuple(owner.shape)
        self.dt = owner.dt

    def record(self, step: int) -> None:
        if step < self.start_step or (self.stop_step is not None and step >= self.stop_step):
            return
        spikes = self.owner.spikes.detach()
        sample, index = spikes.reshape(spikes.shape[0], -1).nonzero(as_tuple=True)
        count = sample.numel()
        offset = 0
        while offset < count:
            filled = int(self.filled)
            take = min(count - offset, self.chunk_size - filled)
            block = self.events[:, filled:filled + take]
            block[0] = step
            block[1] = index[offset:offset + take]
            block[2] = sample[offset:offset + take]
            self.filled += take
            offset += take
            if int(self.filled) == self.chunk_size:
                self.flush()

    def flush(self) -> None:
        """Hand the buffered events to the sink (or the host-side list) and empty the buffer."""
        filled = int(self.filled)
        if filled == 0:
            return
        events = self.events[:, :filled].cpu().numpy().copy()
        chunk = SpikeEvents(events[0], events[1], events[2], self.dt, self.shape)
        self.filled.zero_()
        if self.sink is not None:
            self.sink(chunk)
            return
        if self.max_events is not None and self.kept_events + filled > self.max_events:
            raise RuntimeError(
                f"spike monitor on {self.target!r} reached max_events = {self.max_events}; "
                "pass a sink, raise max_events or record fewer steps"
            )
        self.kept_events += filled
        self.chunks.append(chunk)

    def spike_events(self) -> SpikeEvents:
        """Return every event recorded so far (without a sink) as one chunk."""
        self.flush()
        return SpikeEvents.concatenate(self.chunks, self.dt, self.shape)

    def clear(self) -> None:
        super().clear()
        self.chunks = []
        self.kept_events = 0


class StateMonitor(Monitor):
    """Keep every ``every``-th value of a tensor attribute in a ring buffer.

    Args:
        target: a node or connection name.
        attribute: the attribute, e.g. ``"v"`` (mV) or ``"threshold"`` (mV).
        every: record one step in ``every``.
        capacity: the number of records kept; older ones are overwritten.
    """

    def __init__(self, target: str, attribute: str, *, every: int = 1, capacity: int = 1000) -> None:
        super().__init__(target, attribute)
        if every < 1 or capacity < 1:
            raise ValueError(f"every and capacity must be at least 1, got every={every}, capacity={capacity}")
        self.every = int(every)
        self.capacity = int(capacity)

    def _allocate(self, owner) -> None:
        shape = tuple(getattr(owner, self.attribute).shape)
        self.register_state("values", (self.capacity, *shape), 0.0, batched=False)
        self.register_state("value_steps", (self.capacity,), -1, dtype=torch.long, batched=False)
        self.register_state("count", (), 0, dtype=torch.long, batched=False)

    def record(self, step: int) -> None:
        if step % self.every:
            return
        slot = int(self.count) % self.capacity
        self.values[slot] = getattr(self.owner, self.attribute).detach()
        self.value_steps[slot] = step
        self.count += 1

    def history(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(steps, values)`` of the kept records, oldest first."""
        count = int(self.count)
        if count <= self.capacity:
            return self.value_steps[:count].clone(), self.values[:count].clone()
        start = count % self.capacity
        order = torch.cat([torch.arange(start, self.capacity), torch.arange(0, start)]).to(self.values.device)
        return self.value_steps[order], self.values[order]


class SpikeCountMonitor(Monitor):
    """Count spikes per unit and sample since the last :meth:`clear`. ``counts``: ``(batch, *shape)``."""

    def _allocate(self, owner) -> None:
        self.register_state("counts", owner.shape, 0.0)

    def record(self, step: int) -> None:
        self.counts = self.counts + self.owner.spikes.detach()


class RateMonitor(Monitor):
    """Exponential moving average of the firing rate in Hz with time constant ``tau`` ms."""

    def __init__(self, target: str, *, tau: float = 100.0) -> None:
        super().__init__(target, "spikes")
        if tau <= 0:
            raise ValueError(f"tau must be above 0 ms, got {tau}")
        self.tau = float(tau)

    def _allocate(self, owner) -> None:
        self.register_state("rate", owner.shape, 0.0)
        self.decay = math.exp(-owner.dt / self.tau)
        self.dt = owner.dt

    def record(self, step: int) -> None:
        instantaneous = self.owner.spikes.detach() * (1000.0 / self.dt)
        self.rate = self.decay * self.rate + (1.0 - self.decay) * instantaneous


class TraceMonitor(Monitor):
    """A spike trace: decays with time constant ``tau`` ms and adds ``amplitude`` per spike."""

    def __init__(self, target: str, *, tau: float = 20.0, amplitude: float = 1.0) -> None:
        super().__init__(target, "spikes")
        if tau <= 0:
            raise ValueError(f"tau must be above 0 ms, got {tau}")
        self.tau = float(tau)
        self.amplitude = float(amplitude)

    def _allocate(self, owner) -> None:
        self.register_state("trace", owner.shape, 0.0)
        self.decay = math.exp(-owner.dt / self.tau)

    def record(self, step: int) -> None:
        self.trace = self.decay * self.trace + self.amplitude * self.owner.spikes.detach()


MONITORS: dict[str, type[nn.Module]] = {
    "spikes": SpikeMonitor,
    "state": StateMonitor,
    "spike_count": SpikeCountMonitor,
    "rate": RateMonitor,
    "trace": TraceMonitor,
}
