"""A fixed spatio-temporal spike pattern repeated inside Poisson background noise.

This is the input of delay-learning and pattern-detection experiments. Each
input of a subset fires once at a fixed offset from the start of the pattern.
The pattern recurs at known steps, and every input also fires at random. A
learning rule should make a neuron respond at the occurrences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import torch

from ember.random import mix_seed
from ember.units import check_dt, to_steps

NoiseDuringPattern = Literal["keep", "remove"]


def as_generator(seed: int | torch.Generator) -> torch.Generator:
    """Return ``seed`` if it is a generator, else a new CPU generator seeded with it."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class SpikePattern:
    """A spatio-temporal pattern: input ``indices[k]`` fires ``offsets[k]`` steps after the start.

    Attributes:
        indices: the inputs that take part, int64 ``(P,)``, distinct, in ``[0, num_inputs)``.
        offsets: each input's spike step relative to the pattern start, int64
            ``(P,)``, in ``[0, span_steps)``.
        num_inputs: the number of inputs ``N``, of which the pattern uses ``P``.
        span_steps: the length of the pattern in steps.
        dt: the step length in ms.
    """

    indices: torch.Tensor
    offsets: torch.Tensor
    num_inputs: int
    span_steps: int
    dt: float

    def __post_init__(self) -> None:
        if self.indices.dim() != 1 or self.offsets.shape != self.indices.shape:
            raise ValueError(
                f"indices and offsets must be 1-d tensors of equal length, got shapes "
                f"{tuple(self.indices.shape)} and {tuple(self.offsets.shape)}"
            )
        if self.indices.numel() and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.num_inputs):
            raise ValueError(f"pattern indices must be in [0, {self.num_inputs}), the number of inputs")
        if torch.unique(self.indices).numel() != self.indices.numel():
            raise ValueError("pattern indices must be distinct: each input fires once per occurrence")
        if self.offsets.numel() and (int(self.offsets.min()) < 0 or int(self.offsets.max()) >= self.span_steps):
            raise ValueError(f"pattern offsets must be in [0, span_steps = {self.span_steps}) steps")

    @property
    def offsets_ms(self) -> torch.Tensor:
        """The offsets in ms, float64 ``(P,)``."""
        return self.offsets.to(torch.float64) * self.dt


def random_pattern(
    num_inputs: int,
    *,
    dt: float,
    size: int,
    span_ms: float = 20.0,
    seed: int | torch.Generator = 0,
) -> SpikePattern:
    """Draw a pattern: ``size`` distinct inputs, each with a uniform offset in the span.

    Args:
        num_inputs: the number of inputs ``N``.
        dt: the step length in ms.
        size: how many inputs take part, 1 to ``N``.
        span_ms: the length of the pattern in ms, a whole number of steps.
            Default 20 ms.
        seed: an int seed or a ``torch.Generator`` (CPU). Default 0.

    Returns:
        The pattern, with indices sorted ascending.
    """
    dt = check_dt(dt)
    if not 1 <= size <= num_inputs:
        raise ValueError(f"size must be between 1 and num_inputs = {num_inputs}, got {size!r}")
    span_steps = to_steps(span_ms, dt, name="span_ms")
    if span_steps < 1:
        raise ValueError(f"span_ms must be at least one step of {dt} ms, got {span_ms!r} ms")
    generator = as_generator(seed)
    indices = torch.randperm(num_inputs, generator=generator)[:size].sort().values
    offsets = torch.randint(0, span_steps, (size,), generator=generator)
    return SpikePattern(indices, offsets, num_inputs, span_steps, dt)


@dataclass(frozen=True)
class EmbeddedPattern:
    """Spike trains with a pattern embedded at known steps.

    Attributes:
        spikes: float32 ``(T, N)``, 1.0 where input ``n`` spikes at step ``t``.
        starts: the start step of each occurrence, int64 ``(K,)``, ascending.
        pattern: the embedded pattern.
        dt: the step length in ms.
    """

    spikes: torch.Tensor
    starts: torch.Tensor
    pattern: SpikePattern
    dt: float

    @property
    def starts_ms(self) -> torch.Tensor:
        """The start times in ms, float64 ``(K,)``."""
        return self.starts.to(torch.float64) * self.dt

    def events(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return every spike as ``(steps, indices)``, int64, sorted by step then input."""
        steps, indices = self.spikes.nonzero(as_tuple=True)
        return steps, indices

    def pattern_events(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the spikes that belong to the occurrences as ``(steps, indices)``, int64 ``(K * P,)``.

        Occurrence ``k`` contributes input ``pattern.indices[p]`` at step
        ``starts[k] + pattern.offsets[p]``, in occurrence order.
        """
        steps = (self.starts[:, None] + self.pattern.offsets[None, :]).reshape(-1)
        indices = self.pattern.indices.repeat(self.starts.numel())
        return steps, indices


def embed_pattern(
    pattern: SpikePattern,
    *,
    duration_ms: float,
    rate_hz: float,
    starts_ms: Sequence[float] | None = None,
    occurrences: int | None = None,
    min_gap_ms: float = 0.0,
    noise: NoiseDuringPattern = "keep",
    seed: int | torch.Generator = 0,
) -> EmbeddedPattern:
    """Generate Poisson background spikes and insert ``pattern`` into them.

    Background: every input spikes in every step with probability
    ``rate_hz * dt / 1000`` (a Bernoulli approximation of a Poisson process).
    Each occurrence at start step ``s`` adds a spike of input
    ``pattern.indices[p]`` at step ``s + pattern.offsets[p]``. Where the
    background already has a spike there, the two merge into one.

    The occurrences are either given by ``starts_ms`` or drawn: ``occurrences``
    start steps, uniform over all placements in which every occurrence lies
    inside the run and consecutive occurrences are at least ``min_gap_ms``
    apart (from the end of one span to the start of the next).

    Args:
        pattern: the pattern to embed; its ``dt`` is the step length.
        duration_ms: the length of the run in ms, a whole number of steps.
        rate_hz: the background rate of every input in Hz, at most ``1000 / dt``.
        starts_ms: explicit start times in ms (whole steps), or ``None``.
        occurrences: how many occurrences to draw when ``starts_ms`` is
            ``None``, at least 0.
        min_gap_ms: the least time between two drawn occurrences in ms.
            Default 0.
        noise: ``"keep"`` (default) leaves the background spikes of the
            pattern inputs during an occurrence; ``"remove"`` deletes them,
            so that inside the span of an occurrence each pattern input fires
            only its pattern spike.
        seed: an int seed or a CPU ``torch.Generator``. Default 0.

    Returns:
        The spike trains and where the pattern occurs.

    Raises:
        ValueError: if exactly one of ``starts_ms`` and ``occurrences`` is not
            given, an occurrence does not fit in the run or overlaps
            another, or the rate is out of range.

    Examples:
        >>> pattern = random_pattern(50, dt=1.0, size=20, span_ms=20.0, seed=1)
        >>> run = embed_pattern(pattern, duration_ms=500.0, rate_hz=5.0, occurrences=4, seed=2)
        >>> run.spikes.shape, run.starts.shape
        (torch.Size([500, 50]), torch.Size([4]))
    """
    if noise not in get_args(NoiseDuringPattern):
        raise ValueError(f"noise must be one of {get_args(NoiseDuringPattern)}, got {noise!r}")
    dt = pattern.dt
    steps = to_steps(duration_ms, dt, name="duration_ms")
    probability = float(rate_hz) * dt / 1000.0
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"rate_hz must be between 0 and 1000 / dt = {1000.0 / dt} Hz, got {rate_hz!r}")
    generator = as_generator(seed)

    if (starts_ms is None) == (occurrences is None):
        raise ValueError("give exactly one of starts_ms (explicit start times) and occurrences (a number to draw)")
    if starts_ms is not None:
        starts = _explicit_starts(starts_ms, pattern, steps)
    else:
        starts = _random_starts(occurrences, pattern, steps, to_steps(min_gap_ms, dt, name="min_gap_ms"), generator)

    spikes = (torch.rand((steps, pattern.num_inputs), generator=generator) < probability).to(torch.float32)
    if noise == "remove":
        for start in starts.tolist():
            spikes[start : start + pattern.span_steps, pattern.indices] = 0.0
    for start in starts.tolist():
        spikes[start + pattern.offsets, pattern.indices] = 1.0
    return EmbeddedPattern(spikes, starts, pattern, dt)


def _explicit_starts(starts_ms: Sequence[float], pattern: SpikePattern, steps: int) -> torch.Tensor:
    starts = sorted(to_steps(start, pattern.dt, name=f"starts_ms[{k}]") for k, start in enumerate(starts_ms))
    for start in starts:
        if start + pattern.span_steps > steps:
            raise ValueError(
                f"an occurrence at step {start} spans {pattern.span_steps} steps and does not fit in {steps} steps"
            )
    for earlier, later in zip(starts, starts[1:]):
        if later < earlier + pattern.span_steps:
            raise ValueError(
                f"occurrences at steps {earlier} and {later} overlap; starts must be at least "
                f"{pattern.span_steps} steps (the span) apart"
            )
    return torch.tensor(starts, dtype=torch.int64)


def _random_starts(
    occurrences: int, pattern: SpikePattern, steps: int, gap_steps: int, generator: torch.Generator
) -> torch.Tensor:
    if isinstance(occurrences, bool) or not isinstance(occurrences, int) or occurrences < 0:
        raise ValueError(f"occurrences must be an int of at least 0, got {occurrences!r}")
    if occurrences == 0:
        return torch.zeros(0, dtype=torch.int64)
    stride = pattern.span_steps + gap_steps
    slack = steps - occurrences * pattern.span_steps - (occurrences - 1) * gap_steps
    if slack < 0:
        raise ValueError(
            f"{occurrences} occurrences of {pattern.span_steps} steps with gaps of {gap_steps} steps "
            f"do not fit in {steps} steps; lengthen duration_ms or draw fewer"
        )
    # K distinct values of [0, slack + K), sorted, minus 0, 1, ..., K - 1 give
    # every non-decreasing K-tuple of free steps in [0, slack] with equal
    # probability. Adding k strides then places occurrence k without overlap.
    chosen = torch.randperm(slack + occurrences, generator=generator)[:occurrences].sort().values
    free_before = chosen - torch.arange(occurrences)
    return free_before + stride * torch.arange(occurrences)


def pattern_dataset(
    split_seed: int,
    count: int,
    *,
    pattern_seed: int,
    num_inputs: int = 100,
    pattern_size: int = 50,
    span_ms: float = 20.0,
    duration_ms: float = 100.0,
    dt: float = 1.0,
    rate_hz: float = 10.0,
    noise: NoiseDuringPattern = "keep",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``count`` noise trials of which about half contain the pattern once.

    One pattern, drawn from ``pattern_seed``, is shared by every trial.
    Trial ``i`` depends only on ``split_seed`` and ``i``: its label is 1
    (pattern present, at a uniformly drawn start) or 0 (noise only) with
    probability 1/2 each, so a shorter data set is a prefix of a longer one.

    Returns:
        uint8 spikes ``(count, T, num_inputs)`` and int64 labels ``(count,)``.
    """
    pattern = random_pattern(num_inputs, dt=dt, size=pattern_size, span_ms=span_ms, seed=pattern_seed)
    trials, labels = [], []
    for index in range(count):
        generator = torch.Generator().manual_seed(mix_seed(split_seed, index))
        present = int(torch.randint(0, 2, (), generator=generator))
        run = embed_pattern(
            pattern, duration_ms=duration_ms, rate_hz=rate_hz, occurrences=present, noise=noise, seed=generator
        )
        trials.append(run.spikes.to(torch.uint8))
        labels.append(present)
    return torch.stack(trials), torch.tensor(labels, dtype=torch.int64)
