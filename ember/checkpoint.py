"""Complete checkpoints of a network as safetensors plus JSON, never pickle.

``save_network`` writes every tensor of ``network.state_dict()`` (neuron and
synapse state, spikes in flight, learning-rule traces, monitor buffers, the
step counter and the random-stream key) to ``PATH`` in the safetensors format,
and a JSON companion ``PATH.json`` with the metadata. Random draws are seeded
from the network seed, the sample key and the step counter (see
:mod:`ember.random`), so this state is enough for a network loaded in a fresh
process to continue exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "ember-checkpoint/1"


def network_tensors(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return the network's complete state as contiguous, unshared tensors."""
    return {name: tensor.detach().contiguous().clone() for name, tensor in network.state_dict().items()}


def save_network(network, path: str | Path, metadata: dict | None = None) -> None:
    """Save ``network``'s complete state to ``path`` and ``path`` + ``.json``.

    Args:
        network: an :class:`ember.network.Network`.
        path: the safetensors file to write.
        metadata: extra JSON-serialisable facts to store (progress, job id, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu() for k, v in network_tensors(network).items()}, str(path))
    info = {
        "format": FORMAT,
        "dt": network.dt,
        "seed": network.seed,
        "batch_size": network.batch_size,
        "step": int(network.step_count),
        "metadata": metadata or {},
    }
    Path(str(path) + ".json").write_text(json.dumps(info, indent=2, sort_keys=True))


def load_network(network, path: str | Path, map_location: str | torch.device | None = None) -> dict:
    """Load a checkpoint written by :func:`save_network` into ``network``.

    The network must have the same structure and batch size as the saved one.

    Args:
        network: the network to load into; it is moved to ``map_location`` first.
        path: the safetensors file.
        map_location: the device to load onto; the network's device by default.

    Returns:
        The metadata stored with the checkpoint.

    Raises:
        ValueError: if the file is not an Ember checkpoint or does not match the network.
    """
    path = Path(path)
    info_path = Path(str(path) + ".json")
    if not path.is_file() or not info_path.is_file():
        raise ValueError(f"checkpoint {path} or its companion {info_path.name} not found")
    info = json.loads(info_path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{info_path} is not an Ember checkpoint (format {info.get('format')!r}, expected {FORMAT!r})")
    if info["batch_size"] != network.batch_size:
        raise ValueError(
            f"checkpoint batch size {info['batch_size']} does not match the network's {network.batch_size}; "
            "call network.set_batch_size() first"
        )
    if map_location is not None:
        network.to(map_location)
    device = map_location or next(iter(network.state_dict().values())).device
    tensors = load_file(str(path), device=str(device))
    load_state(network, tensors)
    return info.get("metadata", {})


def load_state(network, tensors: dict[str, torch.Tensor]) -> None:
    """Copy a complete state (as from :func:`network_tensors`) into ``network``, checking names and shapes."""
    own = network.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the network: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, the network has {tuple(own[name].shape)}")
    network.load_state_dict(tensors, strict=True)
