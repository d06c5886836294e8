"""The synapse base class: kinetics that turn arriving weights into current or a voltage jump.

A connection owns one synapse, which filters the summed input of that
connection on the postsynaptic side. This is exact because the kinetics are
linear and shared by all synapses of the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from ember.core import Shape, Stateful, as_shape
from ember.neurons.base import broadcasts_to
from ember.units import check_dt

ParameterValue = float | torch.Tensor


class Synapse(Stateful):
    """Synaptic kinetics for one connection, with state per postsynaptic neuron.

    Subclasses register parameters with :meth:`_add_time_constant` or
    :meth:`_add_parameter`, declare state in :meth:`_register_states`, and
    implement :meth:`forward`.

    Args:
        dt: the step length in ms. May instead be given to :meth:`bind`.
        dtype: the floating point dtype of parameters and state.
        device: where parameters and state live.

    Attributes:
        post_shape: the postsynaptic shape after :meth:`bind`, else ``None``.
        dt: the step length in ms, or ``None`` until known.
    """

    #: The unit of ``arrived``: what one unit of weight means for this synapse.
    input_unit: ClassVar[str] = ""

    def __init__(
        self,
        *,
        dt: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch_size=1, dtype=dtype, device=device)
        self.dt: float | None = None if dt is None else check_dt(dt)
        self.post_shape: Shape | None = None
        self._parameter_units: dict[str, str] = {}

    # ------------------------------------------------------------ construction

    def _add_parameter(self, name: str, value: ParameterValue, unit: str, *, positive: bool = False) -> None:
        """Validate a parameter (finite, and above 0 if ``positive``) and store it as a buffer.

        Raises:
            ValueError: if the value breaks the rule.
        """
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to(device=self.device, dtype=self.dtype).clone()
        else:
            tensor = torch.tensor(value, device=self.device, dtype=self.dtype)
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} of {type(self).__name__} must be finite ({unit}), got {value!r}")
        if positive and not bool((tensor > 0).all()):
            raise ValueError(f"{name} of {type(self).__name__} must be above 0 {unit}, got {value!r}")
        self.register_buffer(name, tensor)
        self._parameter_units[name] = unit

    def _add_time_constant(self, name: str, value: ParameterValue) -> None:
        self._add_parameter(name, value, "ms", positive=True)

    def bind(self, post_shape: int | Sequence[int], batch_size: int, *, dt: float | None = None) -> None:
        """Allocate the state for a postsynaptic population.

        Args:
            post_shape: the postsynaptic shape without the batch dimension.
            batch_size: the number of samples, at least 1.
            dt: the step length in ms, if not given at construction.

        Raises:
            ValueError: for a bad shape or batch size, a ``dt`` that differs
                from the one given at construction, or a parameter tensor that
                does not broadcast to ``post_shape``.
        """
        shape = as_shape(post_shape, name="post_shape")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        if dt is not None:
            dt = check_dt(dt)
            if self.dt is not None and abs(dt - self.dt) > 1e-12 * self.dt:
                raise ValueError(f"{type(self).__name__} was built with dt = {self.dt} ms but bound with dt = {dt} ms")
            self.dt = dt
        for name, unit in self._parameter_units.items():
            value = getattr(self, name)
            if not broadcasts_to(value.shape, shape):
                raise ValueError(
                    f"{name} of {type(self).__name__} ({unit}) must broadcast to the postsynaptic shape {shape}, "
                    f"got a tensor of shape {tuple(value.shape)}"
                )
        self.post_shape = shape
        self.batch_size = int(batch_size)
        self._register_states()

    def _register_states(self) -> None:
        """Declare the state tensors for ``post_shape``; none by default."""

    # -------------------------------------------------------------- simulation

    def _step_length(self) -> float:
        """Return ``dt`` in ms, or raise if it was never given."""
        if self.dt is None:
            raise ValueError(
                f"{type(self).__name__} has no step length: pass dt= (ms) to its constructor or to bind()"
            )
        return self.dt

    def _check_arrived(self, arrived: torch.Tensor) -> None:
        """Raise ValueError unless the synapse is bound and ``arrived`` has shape ``(batch_size, *post_shape)``."""
        if self.post_shape is None:
            raise ValueError(f"{type(self).__name__} is not bound: call bind(post_shape, batch_size) first")
        expected = (self.batch_size, *self.post_shape)
        if tuple(arrived.shape) != expected:
            raise ValueError(
                f"arrived input of {type(self).__name__} must have shape (batch_size, *post_shape) = {expected}, "
                f"got {tuple(arrived.shape)}"
            )

    def forward(self, arrived: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Advance one step and return ``(current in nA or None, voltage jump in mV or None)``.

        Args:
            arrived: the summed weights of the spikes that arrive at this step,
                in :attr:`input_unit`, shape ``(batch_size, *post_shape)``.
            v: the postsynaptic membrane potential in mV before this step's
                integration, same shape.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        """Show each parameter (a number, or the shape of a tensor) and ``dt``."""
        settings = []
        for name, unit in self._parameter_units.items():
            value = getattr(self, name)
            formatted = f"{value.item():g}" if value.dim() == 0 else f"<tensor {tuple(value.shape)}>"
            settings.append(f"{name}={formatted} {unit}")
        if self.dt is not None:
            settings.append(f"dt={self.dt}")
        return ", ".join(settings)
