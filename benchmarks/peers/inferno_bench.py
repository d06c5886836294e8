"""Inferno (``inferno-ai`` 0.0.5) side of the benchmarks.

Inferno's neurons take currents in nA and integrate ``R * I`` exactly over a
step, and its delta synapse turns a spike into a current of ``Q / dt``. A
charge of 1 pC and a weight of ``w * dt / (R * (1 - exp(-dt / tau)))``
therefore raise the membrane potential by exactly ``w`` mV in the step the
spike arrives, which is the voltage jump of the shared workload. STDP rates
and bounds are scaled by the same factor.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from benchmarks import workloads
from benchmarks.protocol import Case, Protocol, Unsupported, main_for, measure
from benchmarks.workloads import DT_MS, FORWARD, W1

FRAMEWORK = "inferno"
VARIANTS = ("cpu", "cuda")
RESISTANCE = 1.0  # MΩ

MODEL_DIFFERENCES = [
    "Weights are currents: each weight is scaled so that one spike raises the membrane potential by the "
    "workload's jump in mV within the step it arrives (delta current synapse, 1 pC, R = 1 MΩ).",
    "Input spikes come from HomogeneousPoissonApproxEncoder (one Bernoulli draw per step), generated for "
    "the whole sample before it runs.",
    "STDP uses Inferno's STDP trainer with nearest traces (set to the amplitude on a spike), summed over "
    "the batch, and hard bounds through a Clamping hook after each update.",
    "Delays (W3) go through Inferno's per-synapse history selector, which builds a batch x inputs x "
    "outputs tensor every step.",
]


def current_scale(tau_membrane: float) -> float:
    """Return the weight (pC per spike) that raises the membrane potential by 1 mV in one step."""
    return DT_MS / (RESISTANCE * (1.0 - math.exp(-DT_MS / tau_membrane)))


def _output_major_weights(case: Case, scale: float) -> Any:
    """Return the case's input weights as an ``(n, inputs)`` tensor in Inferno's units.

    The transposed copy is scaled in place, and the input-major array is
    freed first, so the adapter keeps at most one extra copy of the matrix,
    as Ember's and the other peers' adapters do.
    """
    import torch

    weights = torch.from_numpy(workloads.input_weights(case).T.copy())
    return weights.mul_(scale)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    return {"inferno-ai": version("inferno-ai"), "torch": torch.__version__, "numpy": version("numpy")}


class _Stdp:
    """An Inferno STDP trainer on a layer's cell, with hard bounds."""

    def __init__(self, layer: Any, scale: float, rule: workloads.PairSTDP) -> None:
        import torch
        from inferno import learn
        from inferno import neural as snn

        connection = layer.connection
        connection.updater = connection.defaultupdater()
        # Inferno holds hooks by weak reference, so the clamp must stay referenced.
        self.clamp = snn.Clamping(connection.updater, "parent.weight", min=rule.w_min * scale, max=rule.w_max * scale)
        self.clamp.register()
        self.trainer = learn.STDP(
            lr_post=rule.eta_post * scale,
            lr_pre=-rule.eta_pre * scale,
            tc_post=rule.tau_post,
            tc_pre=rule.tau_pre,
            trace_mode="nearest",
            batch_reduction=torch.sum,
        )
        self.trainer.register_cell("input", layer.cell)
        self.connection = connection
        layer.train()
        self.trainer.train()

    def step(self) -> None:
        self.trainer()
        self.connection.update()

    def clear(self) -> None:
        self.trainer.clear()


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class DiehlCook:
    """W1 on Inferno: ALIF neurons, a dense learned input and a lateral inhibitory connection."""

    def __init__(self, case: Case, device: str) -> None:
        import torch
        from inferno import neural as snn

        scale = current_scale(W1.tau_membrane)
        weights = _output_major_weights(case, scale)
        synapse = snn.DeltaCurrent.partialconstructor(1.0)
        self.connection = snn.LinearDense(
            W1.input_size, case.n, DT_MS, synapse=synapse, batch_size=case.batch,
            weight_init=lambda w: weights,
        )
        self.lateral = snn.LinearLateral(
            case.n, DT_MS, synapse=synapse, batch_size=case.batch,
            weight_init=lambda w: torch.full_like(w, -W1.inhibition * scale),
        )
        self.neuron = snn.ALIF(
            case.n, DT_MS, rest_v=W1.v_rest, reset_v=W1.v_reset, thresh_eq_v=W1.v_threshold,
            refrac_t=W1.refractory, tc_membrane=W1.tau_membrane, tc_adaptation=W1.tau_theta,
            spike_increment=W1.theta_plus, batch_size=case.batch,
        )
        self.layer = snn.Serial(self.connection, self.neuron, transform=lambda current, lateral: current + lateral)
        self.stdp = _Stdp(self.layer, scale, W1.stdp)
        self.encoder = snn.HomogeneousPoissonApproxEncoder(W1.steps_per_sample, DT_MS, frequency=W1.max_rate_hz)
        self.layer.to(device)
        self.lateral.to(device)
        self.case = case
        self.device = device
        self.images = (torch.from_numpy(workloads.images_for_run(case, case.units)) / W1.max_rate_hz).to(device)

    def run(self, units: int) -> int:
        import torch

        count = 0
        with torch.no_grad():
            for sample in range(units):
                self.neuron.clear()
                self.connection.clear()
                self.lateral.clear()
                self.stdp.clear()
                previous = torch.zeros(self.case.batch, self.case.n, dtype=torch.bool, device=self.device)
                total = torch.zeros((), dtype=torch.long, device=self.device)
                for spikes in self.encoder(self.images[sample % len(self.images)]):
                    lateral = self.lateral(previous)
                    previous = self.layer(spikes, lateral=lateral)
                    self.stdp.step()
                    total += previous.sum()
                count += int(total)
        _synchronize(self.device)
        return count


class Forward:
    """W2 and W3 on Inferno: Bernoulli inputs, a dense connection (with delays for W3), LIF neurons."""

    def __init__(self, case: Case, device: str) -> None:
        import torch
        from inferno import neural as snn

        scale = current_scale(FORWARD.tau_membrane)
        weights = _output_major_weights(case, scale)
        options: dict[str, Any] = {}
        if case.delays:
            delays = torch.from_numpy(workloads.input_delays(case).T.copy())
            options = {"delay": FORWARD.max_delay, "delay_init": lambda d: delays.clone()}
        self.connection = snn.LinearDense(
            FORWARD.input_size, case.n, DT_MS, synapse=snn.DeltaCurrent.partialconstructor(1.0),
            batch_size=case.batch, weight_init=lambda w: weights, **options,
        )
        self.neuron = snn.LIF(
            case.n, DT_MS, rest_v=FORWARD.v_rest, reset_v=FORWARD.v_reset, thresh_v=FORWARD.v_threshold,
            refrac_t=FORWARD.refractory, time_constant=FORWARD.tau_membrane, batch_size=case.batch,
        )
        self.layer = snn.Serial(self.connection, self.neuron)
        self.layer.to(device)
        self.stdp = _Stdp(self.layer, scale, FORWARD.stdp) if case.stdp else None
        self.case = case
        self.device = device
        self.snn = snn

    def run(self, units: int) -> int:
        import torch

        encoder = self.snn.HomogeneousPoissonApproxEncoder(units, DT_MS, frequency=FORWARD.input_rate_hz)
        self.neuron.clear()
        self.connection.clear()
        if self.stdp is not None:
            self.stdp.clear()
        count = torch.zeros((), dtype=torch.long, device=self.device)
        with torch.no_grad():
            for spikes in encoder(torch.ones(self.case.batch, FORWARD.input_size, device=self.device)):
                out = self.layer(spikes)
                if self.stdp is not None:
                    self.stdp.step()
                count += out.sum()
        _synchronize(self.device)
        return int(count)


def run_case(case: Case, protocol: Protocol, variant: str) -> dict[str, Any]:
    """Measure one case on Inferno."""
    import inferno.neural  # noqa: F401 - imported before the memory baseline is read
    import torch

    torch.set_num_threads(protocol.threads)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    if case.workload == "W1" and not case.stdp:
        raise Unsupported("W1 is defined with STDP on")
    device = variant
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Unsupported("--device cuda was requested but torch finds no CUDA device")
    build = (lambda: DiehlCook(case, device)) if case.workload == "W1" else (lambda: Forward(case, device))
    return measure(build, case, protocol, framework=FRAMEWORK, variant=device, versions=versions())


if __name__ == "__main__":
    sys.exit(main_for(FRAMEWORK, VARIANTS, run_case))
