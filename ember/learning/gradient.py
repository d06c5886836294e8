"""Gradient training through time (BPTT) with surrogate spike gradients.

``network.run(steps, grad=True)`` records the autograd graph of a run: spikes
carry the surrogate derivative of :func:`ember.surrogate.spike`, weights
enter through each connection's linear map, and delays through the linear
split of fractional delays between two neighbouring steps. The helpers here
record the tensors a loss needs, run one training step and keep weights and
delays within their bounds afterwards.

Plasticity rules change parameters in place, which breaks a recorded graph:
switch them off with ``network.learning(False)`` for gradient training.
Delays are trainable only on connections built with ``learn_delay=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn


def trainable_parameters(network: nn.Module, *, weights: bool = True, delays: bool = True, biases: bool = True) -> list[nn.Parameter]:
    """Return the connection parameters of ``network`` that require a gradient.

    Args:
        network: an :class:`ember.network.Network`.
        weights: include weights.
        delays: include delays (only those built with ``learn_delay=True``).
        biases: include biases.

    Returns:
        The parameters, connection by connection in insertion order.
    """
    chosen = {"weight": weights, "delay": delays, "bias": biases}
    found: list[nn.Parameter] = []
    for connection in network.connections.values():
        for name, include in chosen.items():
            value = getattr(connection, name, None)
            if include and isinstance(value, nn.Parameter) and value.requires_grad:
                found.append(value)
    return found


def _split_target(target: str) -> tuple[str, str]:
    node, _, attribute = target.partition(".")
    return node, attribute or "spikes"


def run_recorded(network, steps: int, record: Iterable[str], *, grad: bool = True) -> dict[str, torch.Tensor]:
    """Run ``steps`` steps and return the recorded node attributes, stacked over time, with their graph.

    Args:
        network: an :class:`ember.network.Network`.
        steps: the number of steps, at least 1.
        record: targets ``"NODE"`` (its spikes) or ``"NODE.ATTRIBUTE"`` (for
            example ``"output.v"``, the membrane potential in mV).
        grad: whether to record the autograd graph, default true.

    Returns:
        ``{target: tensor of shape (steps, batch, *node_shape)}``.

    Raises:
        ValueError: for an unknown node or attribute, or fewer than 1 step.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be at least 1, got {steps!r}")
    targets = {target: _split_target(target) for target in record}
    for target, (node, attribute) in targets.items():
        if node not in network.nodes:
            raise ValueError(f"record target {target!r}: node {node!r} not found; nodes are {sorted(network.nodes)}")
        if not isinstance(getattr(network.nodes[node], attribute, None), torch.Tensor):
            raise ValueError(f"record target {target!r}: node {node!r} has no tensor attribute {attribute!r}")
    frames: dict[str, list[torch.Tensor]] = {target: [] for target in targets}

    def collect(_step: int) -> None:
        for target, (node, attribute) in targets.items():
            frames[target].append(getattr(network.nodes[node], attribute))

    network.run(int(steps), grad=grad, callback=collect)
    return {target: torch.stack(values) for target, values in frames.items()}


@torch.no_grad()
def apply_bounds(network) -> None:
    """Clamp every connection's weights and delays to their bounds (after an optimiser step)."""
    for connection in network.connections.values():
        connection.apply_bounds()


def bptt_step(
    network,
    steps: int,
    loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    record: Iterable[str],
) -> float:
    """Run one sample with autograd, backpropagate the loss through time and step the optimiser.

    The network's state is reset first. After the optimiser step, weights and
    delays are clamped to their bounds and the state is detached.

    Args:
        network: an :class:`ember.network.Network` whose inputs are already set.
        steps: the number of steps to run.
        loss_fn: maps the recorded tensors (see :func:`run_recorded`) to a scalar loss.
        optimizer: an optimiser over (some of) :func:`trainable_parameters`.
        record: the targets to record.

    Returns:
        The loss value.

    Raises:
        ValueError: if a plasticity rule is enabled (it would change
            parameters in place during the recorded run).
    """
    enabled = [name for name, rule in network.rules.items() if getattr(rule, "enabled", True)]
    if enabled:
        raise ValueError(
            f"plasticity rules {enabled} are enabled; switch them off with network.learning(False) before gradient training"
        )
    network.reset_state()
    optimizer.zero_grad()
    recorded = run_recorded(network, steps, record)
    loss = loss_fn(recorded)
    loss.backward()
    optimizer.step()
    apply_bounds(network)
    network.detach_state()
    return float(loss.detach())
