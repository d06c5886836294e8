"""Counter-based random streams for reproducible, resumable simulations.

Every random draw in a network comes from a ``torch.Generator`` that is seeded
from the network seed, a stream number and the step index. The random state of
a network is therefore just its seed and step counter: a run split into chunks,
or saved and resumed in a fresh process, draws exactly the same numbers as an
uninterrupted run on the same device. CPU and CUDA generators give different
streams for the same seed, so identical spikes are promised per device only.
"""

from __future__ import annotations

import torch

_MASK_63 = (1 << 63) - 1
_GENERATORS: dict[str, torch.Generator] = {}


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed with the SplitMix64 finaliser."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
        state = state * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & _MASK_63


def step_generator(seed: int, stream: int, step: int, device: torch.device | str) -> torch.Generator:
    """Return a generator on ``device`` seeded for one (stream, step) pair.

    The generator object is shared per device and reseeded on each call, so
    draw from it before the next call.
    """
    device = torch.device(device)
    key = str(device)
    generator = _GENERATORS.get(key)
    if generator is None:
        generator = torch.Generator(device=device)
        _GENERATORS[key] = generator
    generator.manual_seed(mix_seed(seed, stream, step))
    return generator
