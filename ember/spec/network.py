"""The network spec: populations, inputs, connections and monitors by name."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ember.spec.common import SpecModel, check_name, spec_errors
from ember.spec.connections import ConnectionSpec
from ember.spec.inputs import InputSpec
from ember.spec.learning import HomeostasisSpec
from ember.spec.monitors import MonitorSpec, StateMonitorSpec
from ember.spec.populations import PopulationSpec

Shape = tuple[int, ...]


class NetworkSpec(SpecModel):
    """A spiking network, every part named.

    Names are Python identifiers and unique across populations, inputs,
    connections and monitors; they name the result tensors
    (``CONNECTION.weight``, ``POPULATION.threshold``) and files
    (``spikes/MONITOR.npz``).
    """

    populations: dict[str, PopulationSpec] = Field(min_length=1, description="neuron populations by name")
    inputs: dict[str, InputSpec] = Field(default_factory=dict, description="input nodes by name")
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict, description="connections by name")
    monitors: dict[str, MonitorSpec] = Field(default_factory=dict, description="monitors by name")

    @model_validator(mode="after")
    def _check_structure(self) -> NetworkSpec:
        problems: list[tuple[str, str, tuple, Any]] = []
        seen: dict[str, str] = {}
        for group in ("populations", "inputs", "connections", "monitors"):
            for name in getattr(self, group):
                try:
                    check_name(name, group[:-1])
                except ValueError as error:
                    problems.append(("invalid_name", str(error), (group, name), name))
                if name in seen:
                    problems.append(
                        ("duplicate_name", f"the name {name!r} is used by {seen[name]} and {group}; names must be unique", (group, name), name)
                    )
                seen.setdefault(name, group)

        shapes = self.node_shapes()
        for name, connection in self.connections.items():
            loc = ("connections", name)
            if connection.pre not in shapes:
                problems.append(("unknown_node", f"pre {connection.pre!r} is not a population or input of this network", loc + ("pre",), connection.pre))
            if connection.post not in self.populations:
                hint = " (inputs cannot receive connections)" if connection.post in self.inputs else ""
                problems.append(("unknown_population", f"post {connection.post!r} is not a population of this network{hint}", loc + ("post",), connection.post))
            if connection.pre in shapes and connection.post in self.populations:
                message = connection.shape_error(shapes[connection.pre], shapes[connection.post])
                if message:
                    problems.append(("shape_mismatch", message, loc + ("type",), connection.type))
            for index, rule in enumerate(connection.learning):
                needs_delays = rule.needs_delays or (isinstance(rule, HomeostasisSpec) and rule.parameter == "delay")
                if needs_delays and connection.delay is None:
                    problems.append(
                        ("delays_required", f"rule {rule.type!r} changes delays, so connection {name!r} needs a 'delay' section", loc + ("learning", index, "type"), rule.type)
                    )

        for name, monitor in self.monitors.items():
            loc = ("monitors", name, "target")
            if monitor.target not in shapes:
                problems.append(("unknown_node", f"target {monitor.target!r} is not a population or input of this network", loc, monitor.target))
            elif isinstance(monitor, StateMonitorSpec) and monitor.target not in self.populations:
                problems.append(("unknown_population", f"a state monitor needs a population, and {monitor.target!r} is an input", loc, monitor.target))

        if problems:
            raise spec_errors(problems)
        return self

    def node_shapes(self) -> dict[str, Shape]:
        """Return the shape of every population and input, by name."""
        shapes = {name: tuple(spec.shape) for name, spec in self.inputs.items()}
        shapes.update({name: tuple(spec.shape) for name, spec in self.populations.items()})
        return shapes

    def cycle_without_delay(self, dt: float) -> list[str] | None:
        """Return the connections of a cycle in which every delay may be below one step, or ``None``.

        Args:
            dt: the step length in ms.
        """
        fast: dict[str, list[tuple[str, str]]] = {}
        for name, connection in self.connections.items():
            if connection.default_min_delay_ms(dt) < dt * (1.0 - 1e-9):
                fast.setdefault(connection.pre, []).append((connection.post, name))
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(node: str) -> list[str] | None:
            state[node] = 1
            for target, connection_name in fast.get(node, []):
                stack.append(connection_name)
                if state.get(target) == 1:
                    start = next(i for i, c in enumerate(stack) if self.connections[c].pre == target)
                    return stack[start:]
                if target not in state:
                    found = visit(target)
                    if found:
                        return found
                stack.pop()
            state[node] = 2
            return None

        for node in list(fast):
            if node not in state:
                found = visit(node)
                if found:
                    return found
        return None
