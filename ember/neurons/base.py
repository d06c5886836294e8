"""The base class of neuron populations: parameter storage, state and the step driver.

A population keeps its per-sample state (membrane potential ``v`` in mV, the
refractory counter and model-specific variables) as :class:`ember.core.Stateful`
state, and its parameters as buffers, or as ``nn.Parameter`` for the names
listed in ``trainable``. Each step builds the model's state and parameter
records, calls its pure step function from :mod:`ember.neurons.functional` and
stores the new state by replacing the tensors, so autograd can see every step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ember.core import Node, broadcast_shapes
from ember.surrogate import DEFAULT_SLOPE, SurrogateName, check_surrogate
from ember.units import to_steps

ParameterValue = float | torch.Tensor


class Population(Node):
    """A group of spiking neurons of one model, simulated for a batch of samples.

    Subclasses set the class attributes below and register their parameters
    with :meth:`_add_parameter` before calling :meth:`_register_membrane_state`.

    Args:
        shape: the shape of the population without the batch dimension.
        dt: the step length in ms.
        batch_size: the number of samples simulated side by side, default 1.
        refractory_period: the refractory period in ms, default 0.0; a number
            or a tensor broadcastable to ``shape``. Each value must be a whole
            number of steps.
        surrogate: the surrogate derivative of the spike function, one of
            ``"fast_sigmoid"`` (default), ``"arctan"``, ``"triangle"``.
        surrogate_slope: the steepness of the surrogate derivative in 1/mV,
            default 1.0.
        trainable: names of parameters to store as ``nn.Parameter``, expanded
            to one value per neuron (shape ``shape``), default none. The other
            parameters are buffers.
        dtype: the floating point dtype of parameters and state.
        device: where parameters and state live.

    Attributes:
        v: membrane potential in mV, shape ``(batch_size, *shape)``.
        refractory: remaining refractory steps, int32, shape
            ``(batch_size, *shape)``. A spike sets it to ``refractory_steps``,
            each step first decrements it, and the neuron is refractory while
            it is above 0.
        refractory_steps: the refractory period in steps, an int32 buffer
            broadcastable to ``shape``.
        spikes: the spikes of the last step, 0.0 or 1.0.

    Raises:
        ValueError: for an unknown ``trainable`` name, an invalid surrogate, or
            a refractory period that is negative or not a whole number of steps.
    """

    #: The parameter names of the model, in the order of its parameter record.
    parameter_names: ClassVar[tuple[str, ...]] = ()
    #: The parameter whose value is the firing threshold (mV).
    threshold_name: ClassVar[str] = ""
    #: The record types and pure step function of the model.
    state_type: ClassVar[type[NamedTuple]]
    parameters_type: ClassVar[type[NamedTuple]]
    step_function: ClassVar[Callable[..., tuple[torch.Tensor, Any]]]

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        dt: float,
        batch_size: int = 1,
        refractory_period: ParameterValue = 0.0,
        surrogate: SurrogateName = "fast_sigmoid",
        surrogate_slope: float = DEFAULT_SLOPE,
        trainable: Collection[str] = (),
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(shape, dt=dt, batch_size=batch_size, dtype=dtype, device=device)
        self.surrogate, self.surrogate_slope = check_surrogate(surrogate, surrogate_slope)
        unknown = sorted(set(trainable) - set(self.parameter_names))
        if isinstance(trainable, str) or unknown:
            raise ValueError(
                f"trainable must name parameters of {type(self).__name__} "
                f"({', '.join(self.parameter_names)}), got {trainable!r}"
            )
        self.trainable = tuple(name for name in self.parameter_names if name in trainable)
        self._given: dict[str, Any] = {"refractory_period": refractory_period}
        self.register_buffer("refractory_steps", self._refractory_steps(refractory_period))

    # ------------------------------------------------------------ construction

    def _refractory_steps(self, refractory_period: ParameterValue) -> torch.Tensor:
        """Convert the refractory period (ms) to whole steps, value by value."""
        period = self._broadcastable("refractory_period", refractory_period, "ms", dtype=torch.float64)
        steps = torch.empty(period.shape, dtype=torch.int32)
        flat_period = period.cpu().reshape(-1)
        flat_steps = steps.reshape(-1)
        for value in torch.unique(flat_period).tolist():
            flat_steps[flat_period == value] = to_steps(value, self.dt, name="refractory_period")
        return steps.to(self.device)

    def _broadcastable(
        self, name: str, value: ParameterValue, unit: str, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Return ``value`` as a new tensor (the module's dtype by default), checked to be finite and
        broadcastable to ``shape``."""
        dtype = dtype or self.dtype
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to(device=self.device, dtype=dtype).clone()
        else:
            tensor = torch.tensor(value, device=self.device, dtype=dtype)
        if not broadcasts_to(tensor.shape, self.shape):
            raise ValueError(
                f"{name} must be a number or a tensor broadcastable to the population shape {self.shape}, "
                f"got a tensor of shape {tuple(tensor.shape)}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} must be finite ({unit}), got {value!r}")
        return tensor

    def _add_parameter(self, name: str, value: ParameterValue, unit: str, *, positive: bool = False) -> None:
        """Validate and store one parameter as a buffer, or as a per-neuron ``nn.Parameter`` if trainable.

        Raises:
            ValueError: if the value is not finite, not broadcastable to
                ``shape``, or not above 0 where ``positive`` is set.
        """
        tensor = self._broadcastable(name, value, unit)
        if positive and not bool((tensor > 0).all()):
            raise ValueError(f"{name} must be above 0 {unit}, got {_describe(value)} {unit}")
        self._given[name] = value
        if name in self.trainable:
            self.register_parameter(name, nn.Parameter(tensor.expand(self.shape).clone()))
        else:
            self.register_buffer(name, tensor)

    def _check_below(self, lower: str, upper: str) -> None:
        """Raise ValueError unless parameter ``lower`` is below ``upper`` for every neuron."""
        if not bool((getattr(self, lower) < getattr(self, upper)).all()):
            raise ValueError(
                f"{lower} must be below {upper} for every neuron, got {lower} = {_describe(self._given[lower])} mV "
                f"and {upper} = {_describe(self._given[upper])} mV"
            )

    def _register_membrane_state(self, v_initial: Callable[[], torch.Tensor]) -> None:
        """Declare the membrane potential ``v`` (mV), filled by ``v_initial``, and the refractory counter."""
        self.register_state("v", self.shape, v_initial)
        self.register_state("refractory", self.shape, 0, dtype=torch.int32)

    # -------------------------------------------------------------- simulation

    @property
    def threshold(self) -> torch.Tensor:
        """The firing threshold in mV, shape ``shape``."""
        return getattr(self, self.threshold_name).expand(self.shape)

    def parameters_record(self) -> NamedTuple:
        """Collect the parameters into the record that the step function takes."""
        return self.parameters_type(**{field: getattr(self, field) for field in self.parameters_type._fields})

    def state_record(self) -> NamedTuple:
        """Collect the current state into the record that the step function takes."""
        return self.state_type(**{field: getattr(self, field) for field in self.state_type._fields})

    def step(self, current: torch.Tensor | None = None, jump: torch.Tensor | None = None) -> torch.Tensor:
        """Advance the population by one step of ``dt`` ms.

        Args:
            current: input current in nA, held constant over the step, or
                ``None`` for none.
            jump: a voltage jump in mV added after integration, or ``None``.

        Shape:
            ``current`` and ``jump``: ``(batch_size, *shape)``, or broadcastable
            to it. Returns ``(batch_size, *shape)``.

        Returns:
            The spikes of this step, 0.0 or 1.0, also stored as ``spikes``.

        Raises:
            ValueError: if ``current`` or ``jump`` does not fit the state's shape.
        """
        self._check_input("current", current)
        self._check_input("jump", jump)
        spikes, state = type(self).step_function(current, jump, self.state_record(), self.parameters_record(), self.dt)
        # Every state field is a registered buffer, so writing the buffer table
        # directly is what nn.Module.__setattr__ would do, without its lookups.
        buffers = self._buffers
        for field, value in zip(state._fields, state):
            buffers[field] = value
        buffers["spikes"] = spikes
        return spikes

    def _check_input(self, name: str, value: torch.Tensor | None) -> None:
        if value is None or value.shape == self.v.shape:
            return
        expected = tuple(self.v.shape)
        if not broadcasts_to(value.shape, self.v.shape):
            raise ValueError(
                f"{name} must have shape (batch_size, *shape) = {expected} for {type(self).__name__}, "
                f"got {tuple(value.shape)}"
            )

    def extra_repr(self) -> str:
        """Show the shape, dt and every setting that differs from its default."""
        settings = [f"shape={self.shape}", f"dt={self.dt}"]
        if self.batch_size != 1:
            settings.append(f"batch_size={self.batch_size}")
        defaults = inspect.signature(type(self).__init__).parameters
        for name, value in self._given.items():
            default = defaults[name].default
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                settings.append(f"{name}=<tensor {tuple(value.shape)}>")
            elif float(value) != default:
                settings.append(f"{name}={float(value):g}")
        for name in self.extra_settings():
            value = getattr(self, name)
            if value != defaults[name].default:
                settings.append(f"{name}={value!r}")
        if self.trainable:
            settings.append(f"trainable={self.trainable!r}")
        return ", ".join(settings)

    def extra_settings(self) -> tuple[str, ...]:
        """Names of non-parameter settings that ``extra_repr`` shows when they differ from the default."""
        return ("surrogate", "surrogate_slope")


def broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Return whether a tensor of ``shape`` broadcasts to ``target`` without growing it."""
    if len(shape) > len(target):
        return False
    try:
        return broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def check_substeps(substeps: int) -> int:
    """Validate the number of Euler substeps per step and return it as an int.

    Raises:
        ValueError: if ``substeps`` is not a whole number of at least 1.
    """
    if isinstance(substeps, bool) or int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a whole number of at least 1, got {substeps!r}")
    return int(substeps)


def _describe(value: ParameterValue) -> str:
    """Format a parameter value for an error message: the number, or the range of a tensor."""
    tensor = torch.as_tensor(value)
    if tensor.numel() == 1:
        return f"{tensor.item():g}"
    low, high = tensor.min().item(), tensor.max().item()
    return f"a tensor with values from {low:g} to {high:g}" if math.isfinite(low + high) else "a tensor"
