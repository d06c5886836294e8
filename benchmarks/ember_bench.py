"""Ember side of the benchmarks: the shared workloads built with ``ember.network.Network``.

Run by :mod:`benchmarks.run` with the project's own python, one case per
process: ``python -m benchmarks.ember_bench --variant cpu --case JSON``.

The variant is the device, optionally followed by ``/torch`` to force the
PyTorch engine: ``cpu`` lets ``Network.run`` choose (the native C kernels
where the network supports them), ``cpu/torch`` measures the PyTorch path.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import workloads
from benchmarks.protocol import Case, Protocol, Unsupported, main_for, measure
from benchmarks.workloads import DT_MS, FORWARD, W1

FRAMEWORK = "ember"
VARIANTS = ("cpu", "cpu/torch", "cuda")


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    import ember

    return {"ember": ember.__version__, "torch": torch.__version__, "numpy": version("numpy")}


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _pair_stdp(rule: workloads.PairSTDP) -> Any:
    """Build Ember's pair STDP rule with the workload's amplitudes, nearest traces and a batch sum.

    The weight bounds live on the connection (``w_min``, ``w_max``).
    """
    from ember.learning.stdp import STDP

    return STDP(
        a_plus=rule.eta_post, a_minus=rule.eta_pre, tau_plus=rule.tau_pre, tau_minus=rule.tau_post,
        trace="nearest", reduce="sum",
    )


class _EmberCase:
    """A built Ember network with a Poisson input ``input``, a population ``output`` and a spike counter."""

    def __init__(self, case: Case, device: str, engine: str) -> None:
        from ember import Network

        self.case = case
        self.device = device
        self.network = Network(dt=DT_MS, batch_size=case.batch, seed=0, engine=engine)

    def add_input(self, size: int) -> Any:
        from ember import EncodedInput, PoissonEncoder

        return self.network.add("input", EncodedInput(size, PoissonEncoder(dt=DT_MS, saturation="clip"), DT_MS))

    def add_counter(self) -> None:
        from ember import SpikeCountMonitor

        self.counter = self.network.add_monitor("count", SpikeCountMonitor("output"))

    def finish(self) -> None:
        self.network.to(self.device)

    def engine_note(self) -> str:
        """Return which engine ``Network.run`` uses for this network, and why when it is not the native one."""
        if self.network.engine == "torch" or self.device != "cpu":
            return "engine: PyTorch"
        from ember.native import unsupported_reason

        reason = unsupported_reason(self.network)
        return "engine: native C kernels" if reason is None else f"engine: PyTorch, because {reason}"

    def spike_count(self) -> int:
        return int(self.counter.counts.sum().item())


class DiehlCook(_EmberCase):
    """W1 on Ember: AdaptiveLIF with a learned dense input and a lateral inhibitory connection."""

    def __init__(self, case: Case, device: str, engine: str) -> None:
        import torch

        from ember import AdaptiveLIF, Dense, Lateral

        super().__init__(case, device, engine)
        self.source = self.add_input(W1.input_size)
        self.network.add(
            "output",
            AdaptiveLIF(
                case.n, dt=DT_MS, tau_mem=W1.tau_membrane, v_rest=W1.v_rest, v_reset=W1.v_reset,
                v_threshold=W1.v_threshold, refractory_period=W1.refractory, theta_plus=W1.theta_plus,
                tau_theta=W1.tau_theta,
            ),
        )
        rule = W1.stdp
        weights = torch.from_numpy(workloads.input_weights(case))
        self.network.connect(
            "input_to_output", "input", "output",
            Dense(W1.input_size, case.n, weights, dt=DT_MS, w_min=rule.w_min, w_max=rule.w_max, copy=False),
        )
        inhibition = torch.full((case.n, case.n), -W1.inhibition)
        self.network.connect("inhibition", "output", "output", Lateral(case.n, inhibition, dt=DT_MS, copy=False))
        self.network.add_rule("stdp", _pair_stdp(rule), "input_to_output")
        self.add_counter()
        self.finish()
        self.images = torch.from_numpy(workloads.images_for_run(case, case.units)).to(device)

    def run(self, units: int) -> int:
        import torch

        before = self.spike_count()
        with torch.no_grad():
            for sample in range(units):
                self.network.reset_state()
                self.source.set_data(self.images[sample % len(self.images)])
                self.network.run(W1.steps_per_sample)
        _synchronize(self.device)
        return self.spike_count() - before


class Forward(_EmberCase):
    """W2 and W3 on Ember: Bernoulli inputs, a dense connection (with delays for W3), LIF neurons."""

    def __init__(self, case: Case, device: str, engine: str) -> None:
        import torch

        from ember import LIF, Dense

        super().__init__(case, device, engine)
        self.source = self.add_input(FORWARD.input_size)
        self.network.add(
            "output",
            LIF(
                case.n, dt=DT_MS, tau_mem=FORWARD.tau_membrane, v_rest=FORWARD.v_rest, v_reset=FORWARD.v_reset,
                v_threshold=FORWARD.v_threshold, refractory_period=FORWARD.refractory,
            ),
        )
        options: dict[str, Any] = {}
        if case.stdp:
            options.update(w_min=FORWARD.stdp.w_min, w_max=FORWARD.stdp.w_max)
        if case.delays:
            options.update(delay=torch.from_numpy(workloads.input_delays(case)), max_delay=FORWARD.max_delay)
        # The connection takes the drawn matrix as its weight (copy=False), as
        # Inferno's LinearDense takes the tensor that its weight_init returns.
        weights = torch.from_numpy(workloads.input_weights(case))
        self.network.connect("input_to_output", "input", "output", Dense(FORWARD.input_size, case.n, weights, dt=DT_MS, copy=False, **options))
        if case.stdp:
            self.network.add_rule("stdp", _pair_stdp(FORWARD.stdp), "input_to_output")
        self.add_counter()
        self.finish()
        self.rates = torch.full((case.batch, FORWARD.input_size), FORWARD.input_rate_hz, device=device)

    def prepare(self, units: int) -> None:
        self.network.reset_state()
        self.source.set_data(self.rates)

    def run(self, units: int) -> int:
        import torch

        before = self.spike_count()
        with torch.no_grad():
            self.network.run(units)
        _synchronize(self.device)
        return self.spike_count() - before


def run_case(case: Case, protocol: Protocol, variant: str) -> dict[str, Any]:
    """Measure one case on Ember; ``variant`` is the device, with ``/torch`` to force the PyTorch engine."""
    import torch

    import ember.network  # noqa: F401 - imported before the memory baseline is read

    torch.set_num_threads(protocol.threads)
    torch.manual_seed(0)
    if case.workload == "W1" and not case.stdp:
        raise Unsupported("W1 is defined with STDP on")
    device, _, engine = variant.partition("/")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Unsupported("--device cuda was requested but torch finds no CUDA device")
    model = DiehlCook if case.workload == "W1" else Forward
    built: list[_EmberCase] = []

    def build() -> _EmberCase:
        built.append(model(case, device, engine or "auto"))
        return built[0]

    record = measure(build, case, protocol, framework=FRAMEWORK, variant=variant, versions=versions())
    record["notes"].insert(0, built[0].engine_note())
    return record


if __name__ == "__main__":
    sys.exit(main_for(FRAMEWORK, VARIANTS, run_case))
