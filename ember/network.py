"""Networks: nodes and connections composed into a graph that steps in topological order.

One call of :meth:`Network.step` advances step ``t`` as follows:

1. Nodes are visited in topological order of the connections that can
   deliver within the same step (delay below one step). Each population first
   reads the input that arrives at step ``t`` from each incoming connection,
   passes it through that connection's synapse, adds injected currents, and
   integrates. Each source emits its spikes for step ``t``.
2. Right after a node has spiked, each outgoing connection puts the spikes
   into its ring buffer at their delays.
3. Learning rules see the spikes of step ``t`` and apply their updates.
4. Monitors record.

Every cycle of connections must contain a connection whose delay is at least
one step; a network that breaks this rule is rejected with the cycle named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

import torch
from torch import nn

from ember.connections.base import Connection
from ember.core import Node, Stateful
from ember.random import mix_seed
from ember.units import check_dt

logger = logging.getLogger(__name__)

Engine = Literal["auto", "torch", "native"]


class _NamedModules(nn.ModuleDict):
    """A ModuleDict that also accepts names of its own methods (``forward``, ``keys``, ...).

    Items are reached by ``[name]`` only, so a user's connection may be named
    ``forward`` without clashing with ``nn.Module.forward``.
    """

    def __setitem__(self, key: str, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"{type(module).__name__} is not an nn.Module")
        self._modules[key] = module


class NetworkError(ValueError):
    """An invalid network structure: unknown names, shape mismatches or cycles without delay."""


def _is_population(node: Node) -> bool:
    from ember.neurons import Population

    return isinstance(node, Population)


def _native_unsupported(reason: str) -> NetworkError:
    """Build the error for ``engine='native'`` when the kernels cannot run the network.

    Only ``engine='native'`` raises it, because ``'auto'`` falls back to
    PyTorch. The hint to set ``engine='auto'`` is added unless the reason
    already names it.
    """
    message = f"engine='native' cannot run this network: {reason}"
    if "engine='auto'" not in reason:
        message += "; set engine='auto' to fall back to PyTorch"
    return NetworkError(message)


class Network(nn.Module):
    """A spiking network: named nodes, connections, injected currents, learning rules and monitors.

    Args:
        dt: the step length in ms, shared by every part.
        batch_size: the number of samples simulated side by side.
        seed: the seed of every random draw in the network.
        engine: how :meth:`run` steps without autograd. ``"auto"`` (default)
            runs many steps per call of Ember's compiled CPU kernels
            (:mod:`ember.native`) when every part of the network is supported,
            and PyTorch otherwise. ``"torch"`` always steps in PyTorch.
            ``"native"`` requires the kernels and raises :class:`NetworkError`
            naming the part they cannot run. The kernels repeat PyTorch's
            arithmetic, so both paths give the same results, apart from
            last-bit differences in sums that PyTorch leaves to matrix
            products (see :mod:`ember.native.runner`).

    Attributes:
        nodes: populations and input sources by name.
        connections: connections by name.
        rules: learning rules by name.
        monitors: monitors by name.
        step_count: the index of the next step (a 0-d int64 buffer).
        sample_key: an integer mixed into every random seed, so that samples
            shown one after another draw different noise; the runner sets it
            per sample. Part of the saved state.

    Examples:
        >>> import torch
        >>> from ember import Network, LIF, Dense, SpikeGenerator
        >>> net = Network(dt=1.0)
        >>> _ = net.add("input", SpikeGenerator(2, times_ms=[0.0], indices=[0], dt=1.0))
        >>> _ = net.add("output", LIF(1, dt=1.0, v_threshold=-64.0))
        >>> _ = net.connect("input_to_output", "input", "output", Dense(2, 1, torch.full((2, 1), 2.0), dt=1.0))
        >>> net.run(3)
        >>> int(net.step_count)
        3
    """

    def __init__(self, *, dt: float, batch_size: int = 1, seed: int = 0, engine: Engine = "auto") -> None:
        super().__init__()
        self.engine = engine
        self.dt = check_dt(dt)
        if int(batch_size) < 1:
            raise NetworkError(f"batch_size must be at least 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.nodes = _NamedModules()
        self.connections = _NamedModules()
        self.currents = _NamedModules()
        self.rules = _NamedModules()
        self.monitors = _NamedModules()
        self.edges: dict[str, tuple[str, str]] = {}
        self.current_targets: dict[str, str] = {}
        self.rule_targets: dict[str, str] = {}
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("sample_key", torch.zeros((), dtype=torch.long))
        self._order: list[str] | None = None
        self._cached_plan: tuple[list[str], list] | None = None

    @property
    def engine(self) -> Engine:
        """How :meth:`run` steps without autograd: ``"auto"``, ``"torch"`` or ``"native"``."""
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        if engine not in get_args(Engine):
            raise NetworkError(f"engine must be one of {get_args(Engine)}, got {engine!r}")
        self._engine = engine

    # ---------------------------------------------------------------- building

    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise NetworkError(f"names must be Python identifiers (letters, digits, _), got {name!r}")
        for group in (self.nodes, self.connections, self.currents, self.rules, self.monitors):
            if name in group:
                raise NetworkError(f"the name {name!r} is already used in this network; choose another")

    def _adopt(self, module: Stateful) -> None:
        if module.batch_size != self.batch_size:
            module.set_batch_size(self.batch_size)

    def add(self, name: str, node: Node) -> Node:
        """Add a population or an input source under ``name`` and return it."""
        self._check_new_name(name)
        if not isinstance(node, Node):
            raise NetworkError(f"node {name!r} must be an ember Node (population or source), got {type(node).__name__}")
        if abs(node.dt - self.dt) > 1e-12:
            raise NetworkError(f"node {name!r} has dt = {node.dt} ms but the network has dt = {self.dt} ms")
        self._adopt(node)
        self.nodes[name] = node
        self._order = None
        return node

    add_node = add

    def connect(self, name: str, pre: str, post: str, connection: Connection) -> Connection:
        """Add ``connection`` from node ``pre`` to population ``post`` under ``name`` and return it."""
        self._check_new_name(name)
        for role, node_name in (("pre", pre), ("post", post)):
            if node_name not in self.nodes:
                raise NetworkError(f"connection {name!r}: {role} node {node_name!r} not found; add it first")
        if not _is_population(self.nodes[post]):
            raise NetworkError(f"connection {name!r}: post node {post!r} is not a neuron population")
        if tuple(connection.pre_shape) != self.nodes[pre].shape:
            raise NetworkError(
                f"connection {name!r}: pre_shape {connection.pre_shape} does not match node {pre!r} shape {self.nodes[pre].shape}"
            )
        if tuple(connection.post_shape) != self.nodes[post].shape:
            raise NetworkError(
                f"connection {name!r}: post_shape {connection.post_shape} does not match node {post!r} shape {self.nodes[post].shape}"
            )
        if abs(connection.dt - self.dt) > 1e-12:
            raise NetworkError(f"connection {name!r} has dt = {connection.dt} ms but the network has dt = {self.dt} ms")
        self._adopt(connection)
        self.connections[name] = connection
        self.edges[name] = (pre, post)
        self._order = None
        try:
            self.topological_order()
        except NetworkError:
            del self.connections[name]
            del self.edges[name]
            self._order = None
            raise
        return connection

    def add_current(self, name: str, population: str, source: nn.Module) -> nn.Module:
        """Inject a current source (a module with ``current(step) -> nA tensor``) into ``population``."""
        self._check_new_name(name)
        if population not in self.nodes or not _is_population(self.nodes[population]):
            raise NetworkError(f"current {name!r}: population {population!r} not found")
        if not callable(getattr(source, "current", None)):
            raise NetworkError(f"current {name!r} must have a method current(step) returning nA")
        if isinstance(source, Stateful):
            self._adopt(source)
        self.currents[name] = source
        self.current_targets[name] = population
        self._cached_plan = None
        return source

    def add_rule(self, name: str, rule: nn.Module, connection: str) -> nn.Module:
        """Attach a learning rule to the connection named ``connection``."""
        self._check_new_name(name)
        if connection not in self.connections:
            raise NetworkError(f"rule {name!r}: connection {connection!r} not found")
        pre, post = self.edges[connection]
        if hasattr(rule, "bind"):
            rule.bind(self.connections[connection], self.nodes[pre], self.nodes[post])
        if isinstance(rule, Stateful):
            self._adopt(rule)
        self.rules[name] = rule
        self.rule_targets[name] = connection
        return rule

    def add_monitor(self, name: str, monitor: nn.Module) -> nn.Module:
        """Add a monitor; it is bound to this network and records after every step."""
        self._check_new_name(name)
        if hasattr(monitor, "bind"):
            monitor.bind(self)
        self.monitors[name] = monitor
        return monitor

    # ------------------------------------------------------------------- order

    def topological_order(self) -> list[str]:
        """Return node names in the order they step; raise :class:`NetworkError` on a cycle without delay."""
        if self._order is not None:
            return self._order
        same_step = {name: [] for name in self.nodes}
        for conn_name, (pre, post) in self.edges.items():
            if self.connections[conn_name].min_delay_steps < 1.0 - 1e-9:
                same_step[post].append((pre, conn_name))
        order: list[str] = []
        state: dict[str, int] = {}
        stack: list[str] = []
        walked: list[str] = []  # walked[k] leads from stack[k + 1] back to stack[k]

        def visit(node: str) -> None:
            state[node] = 1
            stack.append(node)
            for pre, conn_name in same_step[node]:
                if state.get(pre) == 1:
                    cycle = walked[stack.index(pre):] + [conn_name]
                    raise NetworkError(
                        f"connections {sorted(cycle)} form a cycle in which every delay may be below one step; "
                        "give at least one of them a delay (and min_delay) of at least dt"
                    )
                if state.get(pre) is None:
                    walked.append(conn_name)
                    visit(pre)
                    walked.pop()
            stack.pop()
            state[node] = 2
            order.append(node)

        for node in self.nodes:
            if node not in state:
                visit(node)
        self._order = order
        return order

    # ----------------------------------------------------------------- running

    def _plan(self) -> list[tuple[int, str, Node, bool, list, list, list]]:
        """Return, per node in step order: index, name, node, is-population, incoming, outgoing, currents."""
        order = self.topological_order()
        if self._cached_plan is not None and self._cached_plan[0] is order:
            return self._cached_plan[1]
        plan = []
        for index, name in enumerate(order):
            incoming = [self.connections[c] for c, (_, post) in self.edges.items() if post == name]
            outgoing = [self.connections[c] for c, (pre, _) in self.edges.items() if pre == name]
            currents = [self.currents[c] for c, target in self.current_targets.items() if target == name]
            node = self.nodes[name]
            plan.append((index, name, node, _is_population(node), incoming, outgoing, currents))
        self._cached_plan = (order, plan)
        return plan

    def step(self, *, grad: bool = False) -> None:
        """Advance the network by one step of ``dt`` ms.

        Args:
            grad: record the autograd graph of this step (for BPTT); off by
                default, so that a loop of ``step()`` calls does not build an
                ever-growing graph when weights require gradients.
        """
        with torch.set_grad_enabled(grad):
            self._step()

    def _step(self) -> None:
        step = int(self.step_count)
        source_seed = mix_seed(self.seed, int(self.sample_key))
        for index, name, node, is_population, incoming, outgoing, currents in self._plan():
            if is_population:
                current, jump = self._gather_input(node, incoming, currents, step)
                node.step(current, jump)
            else:
                node.seed = source_seed
                node.stream = index
                node.step(step)
            for connection in outgoing:
                connection.emit(node.spikes, step)

        for name, rule in self.rules.items():
            if getattr(rule, "enabled", True):
                rule.step(step)
        for monitor in self.monitors.values():
            monitor.record(step)
        self.step_count = self.step_count + 1

    @staticmethod
    def _gather_input(node: Node, connections: list, currents: list, step: int):
        current = None
        jump = None
        for connection in connections:
            arrived = connection.receive(step)
            syn_current, syn_jump = connection.synapse(arrived, node.v)
            if syn_current is not None:
                current = syn_current if current is None else current + syn_current
            if syn_jump is not None:
                jump = syn_jump if jump is None else jump + syn_jump
        for source in currents:
            injected = source.current(step)
            current = injected if current is None else current + injected
        return current, jump

    def run(
        self,
        steps: int,
        *,
        grad: bool = False,
        callback: Callable[[int], Any] | None = None,
    ) -> None:
        """Run ``steps`` steps. Runs split into chunks give exactly the result of one long run.

        Without ``grad``, the network's :attr:`engine` decides whether the steps
        run in Ember's compiled kernels (:mod:`ember.native`) or in PyTorch.

        Args:
            steps: the number of steps, at least 0.
            grad: record the autograd graph (for BPTT); off by default.
            callback: called with the step index after each step.

        Raises:
            NetworkError: for a negative ``steps``; with ``engine="native"``,
                when ``grad`` is set or the kernels cannot run this network.
        """
        if int(steps) < 0:
            raise NetworkError(f"steps must be at least 0, got {steps!r}")
        if grad and self.engine == "native":
            raise NetworkError("engine='native' does not record autograd graphs; pass grad=False or set engine='auto'")
        with torch.set_grad_enabled(grad):
            if not grad and self.engine != "torch" and int(steps) > 0:
                from ember.native.runner import run_native

                reason = run_native(self, int(steps), callback)
                if reason is None:
                    return
                if self.engine == "native":
                    raise _native_unsupported(reason)
            for _ in range(int(steps)):
                self._step()
                if callback is not None:
                    callback(int(self.step_count) - 1)

    # ------------------------------------------------------------------- state

    def reset_state(self) -> None:
        """Clear everything a sample leaves behind: neuron and synapse state, spikes in flight,
        learning-rule traces and the step counter. Weights, delays and monitors' records stay.

        After ``reset_state()`` the network runs a sample exactly as a freshly
        built network with the same parameters and ``sample_key`` would.
        """
        for module in self.modules():
            if isinstance(module, Stateful) and not getattr(module, "is_monitor", False):
                module.reset_own_state()
        self.step_count = torch.zeros_like(self.step_count)

    def set_batch_size(self, batch_size: int) -> None:
        """Reallocate all state for a new batch size (this also resets the state)."""
        if int(batch_size) < 1:
            raise NetworkError(f"batch_size must be at least 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        for module in self.modules():
            if isinstance(module, Stateful) and not getattr(module, "is_monitor", False):
                module.set_batch_size(self.batch_size)
        for monitor in self.monitors.values():
            if hasattr(monitor, "bind"):
                monitor.bind(self)
        self.step_count = torch.zeros_like(self.step_count)

    def detach_state(self) -> None:
        """Cut the autograd history of all state (truncated BPTT between chunks)."""
        for module in self.modules():
            if isinstance(module, Stateful):
                module.detach_own_state()

    def learning(self, enabled: bool = True, *, connections: Iterable[str] | None = None) -> None:
        """Switch learning rules on or off, for all rules or for those on the named connections."""
        chosen = None if connections is None else set(connections)
        for name, rule in self.rules.items():
            if chosen is None or self.rule_targets[name] in chosen:
                rule.enabled = bool(enabled)

    def save(self, path: str, metadata: dict | None = None) -> None:
        """Save the complete state to ``path`` (safetensors) and ``path``'s ``.json`` companion."""
        from ember.checkpoint import save_network

        save_network(self, path, metadata)

    def load(self, path: str, map_location: str | torch.device | None = None) -> dict:
        """Load a state saved by :meth:`save` into this network; return its metadata."""
        from ember.checkpoint import load_network

        return load_network(self, path, map_location)
