"""Random-dot kinematograms: dots moving on a small pixel grid, as spike trains.

A trial shows ``num_dots`` dots on an ``height x width`` grid that wraps
around at the edges (a torus). A pixel spikes in a step when at least one dot
is on it. A fraction ``coherence`` of the dots moves in the trial's direction,
and each other dot moves in its own direction, drawn from the eight grid
directions. The label is the index of the trial's direction.

Directions are numbered counterclockwise from east on the image, with row 0
at the top. With 4 directions they are 0 east, 1 north, 2 west, 3 south. With
8 directions they are 0 east, 1 northeast, 2 north, 3 northwest, 4 west,
5 southwest, 6 south, 7 southeast. A dot moves ``speed_px_per_ms`` pixels per ms along each axis
its direction uses, so a diagonal dot covers sqrt(2) times that distance.
"""

from __future__ import annotations

import torch

from ember.encoders.latency import snap_floor
from ember.random import mix_seed
from ember.units import check_dt, to_steps

DIRECTION_NAMES = {
    4: ("east", "north", "west", "south"),
    8: ("east", "northeast", "north", "northwest", "west", "southwest", "south", "southeast"),
}

# (row step, column step) of the eight grid directions, counterclockwise from east.
_GRID_DIRECTIONS = torch.tensor([[0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1], [1, 0], [1, 1]])


def direction_vectors(num_directions: int) -> torch.Tensor:
    """Return the (row, column) step of each direction, int64 ``(num_directions, 2)``.

    Args:
        num_directions: 4 or 8.
    """
    if num_directions not in DIRECTION_NAMES:
        raise ValueError(f"num_directions must be 4 or 8, got {num_directions!r}")
    return _GRID_DIRECTIONS[:: 8 // num_directions].clone()


def rdk_trial(
    direction: int,
    *,
    num_directions: int = 4,
    height: int = 13,
    width: int = 13,
    num_dots: int = 10,
    duration_ms: float = 30.0,
    dt: float = 1.0,
    speed_px_per_ms: float = 1.0,
    coherence: float = 1.0,
    generator: torch.Generator,
) -> torch.Tensor:
    """Generate the spike trains of one trial.

    Dots start on random pixels. The dot position at step ``t`` is its start
    plus ``t * dt * speed_px_per_ms`` times its direction vector, modulo the
    grid size, and it occupies the pixel whose index is the floor of that
    position.

    Args:
        direction: the trial's direction index, in ``[0, num_directions)``.
        num_directions: 4 (default) or 8.
        height: grid rows. Default 13.
        width: grid columns. Default 13.
        num_dots: the number of dots. Default 10.
        duration_ms: the length of the trial in ms, a whole number of steps.
            Default 30 ms.
        dt: the step length in ms. Default 1 ms.
        speed_px_per_ms: the speed along each axis in pixels per ms. Default 1.
        coherence: the fraction of dots that move in ``direction``, in [0, 1];
            ``round(coherence * num_dots)`` dots do. Default 1.
        generator: the CPU random generator for the start pixels and the
            directions of the incoherent dots.

    Returns:
        uint8 spikes of shape ``(T, 1, height, width)``.
    """
    vectors = direction_vectors(num_directions)
    if not 0 <= direction < num_directions:
        raise ValueError(f"direction must be in [0, {num_directions}), got {direction!r}")
    if height < 1 or width < 1 or num_dots < 1:
        raise ValueError(f"height, width and num_dots must be at least 1, got {height}, {width}, {num_dots}")
    if not 0.0 <= coherence <= 1.0:
        raise ValueError(f"coherence must be in [0, 1], got {coherence!r}")
    if speed_px_per_ms < 0.0:
        raise ValueError(f"speed_px_per_ms must be at least 0, got {speed_px_per_ms!r}")
    dt = check_dt(dt)
    steps = to_steps(duration_ms, dt, name="duration_ms")
    if steps < 1:
        raise ValueError(f"duration_ms must be at least one step of {dt} ms, got {duration_ms!r} ms")

    start_rows = torch.randint(0, height, (num_dots,), generator=generator)
    start_columns = torch.randint(0, width, (num_dots,), generator=generator)
    coherent = round(coherence * num_dots)
    velocity = vectors[direction].expand(num_dots, 2).clone()
    velocity[coherent:] = _GRID_DIRECTIONS[torch.randint(0, 8, (num_dots - coherent,), generator=generator)]

    # Positions come from t directly, not by accumulating steps, so no rounding drift.
    distance = torch.arange(steps, dtype=torch.float64)[:, None] * (dt * speed_px_per_ms)
    rows = snap_floor(start_rows[None, :] + distance * velocity[None, :, 0]).to(torch.int64) % height
    columns = snap_floor(start_columns[None, :] + distance * velocity[None, :, 1]).to(torch.int64) % width

    spikes = torch.zeros((steps, 1, height, width), dtype=torch.uint8)
    frame = torch.arange(steps)[:, None].expand(steps, num_dots)
    spikes[frame, 0, rows, columns] = 1
    return spikes


def rdk_dataset(
    split_seed: int,
    count: int,
    *,
    num_directions: int = 4,
    height: int = 13,
    width: int = 13,
    num_dots: int = 10,
    duration_ms: float = 30.0,
    dt: float = 1.0,
    speed_px_per_ms: float = 1.0,
    coherence: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``count`` trials with uniformly drawn directions.

    Trial ``i`` depends only on ``split_seed`` and ``i``, so a shorter data
    set is a prefix of a longer one. The keyword arguments are those of
    :func:`rdk_trial`.

    Returns:
        uint8 spikes ``(count, T, 1, height, width)`` and int64 direction
        labels ``(count,)``.
    """
    trials, labels = [], []
    for index in range(count):
        generator = torch.Generator().manual_seed(mix_seed(split_seed, index))
        direction = int(torch.randint(0, num_directions, (), generator=generator))
        trials.append(
            rdk_trial(
                direction,
                num_directions=num_directions,
                height=height,
                width=width,
                num_dots=num_dots,
                duration_ms=duration_ms,
                dt=dt,
                speed_px_per_ms=speed_px_per_ms,
                coherence=coherence,
                generator=generator,
            )
        )
        labels.append(direction)
    return torch.stack(trials), torch.tensor(labels, dtype=torch.int64)
