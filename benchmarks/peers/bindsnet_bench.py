"""BindsNET (``bindsnet`` 0.3.4) side of the benchmarks.

BindsNET adds the summed weighted input to the membrane potential after the
leak, which is the voltage jump of the shared workload, so weights are used
as they are. The network runs with ``one_step=True``: layers update in the
order they were added and a feedforward spike reaches its target in the same
step, while the recurrent inhibition reads the previous step's spikes.

BindsNET 0.3.4 imports torchvision, OpenCV, Gymnasium and ALE at import time
for its data sets and environments. The benchmark environment installs it
without those (see :mod:`benchmarks.envs`) and a ``sitecustomize`` module
replaces them with import stubs; nothing here calls them.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import workloads
from benchmarks.protocol import Case, Protocol, Unsupported, main_for, measure
from benchmarks.workloads import DT_MS, FORWARD, W1

FRAMEWORK = "bindsnet"
VARIANTS = ("cpu", "cuda")

MODEL_DIFFERENCES = [
    "The refractory counter is decremented after the input is masked, so a refractory period of r ms "
    "blocks r steps after the spike step: the shortest inter-spike interval is r + 1 steps (Ember: r).",
    "During the refractory period the membrane potential still decays toward rest; Ember holds it at reset.",
    "W1 uses DiehlAndCookNodes with one_spike=False. Its adaptive threshold, one value per neuron shared by "
    "the batch, rises by theta_plus times the number of samples in which the neuron spiked; Ember's shared "
    "threshold rises by theta_plus times the fraction of such samples, so with a batch BindsNET's rises "
    "batch-size times faster.",
    "W1 input spikes come from bindsnet.encoding.poisson (exponential inter-spike intervals, at most one "
    "spike per step), generated for the whole sample before it runs.",
    "STDP is PostPre on the fused dense path (sum over the batch), then weights are clamped to the bounds; "
    "traces are set to 1 on a spike (traces_additive=False).",
    "A Monitor on the output spikes counts them; it adds a copy of the spikes per step.",
]


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    return {"bindsnet": version("bindsnet"), "torch": torch.__version__, "numpy": version("numpy")}


class _Net:
    """A BindsNET network with an input layer ``X`` and an output layer ``Y`` that is monitored."""

    def __init__(self, case: Case, device: str) -> None:
        from bindsnet.network import Network

        self.network = Network(dt=DT_MS, batch_size=case.batch, learning=case.stdp)
        self.case = case
        self.device = device

    def add_monitor(self, steps: int) -> None:
        from bindsnet.network.monitors import Monitor

        if "Y" in self.network.monitors:
            del self.network.monitors["Y"]
        self.monitor = Monitor(self.network.layers["Y"], state_vars=["s"], time=steps, device=self.device)
        self.network.add_monitor(self.monitor, name="Y")

    def run_sample(self, spikes: Any, steps: int) -> int:
        self.network.reset_state_variables()
        self.network.run(inputs={"X": spikes}, time=steps, one_step=True)
        return int(self.monitor.get("s").sum())

    def finish(self) -> None:
        self.network.to(self.device)


class DiehlCook(_Net):
    """W1 on BindsNET: Diehl & Cook nodes, a PostPre-trained input and recurrent inhibition."""

    def __init__(self, case: Case, device: str) -> None:
        import torch
        from bindsnet.learning import PostPre
        from bindsnet.network.nodes import DiehlAndCookNodes, Input
        from bindsnet.network.topology import Connection

        super().__init__(case, device)
        rule = W1.stdp
        source = Input(n=W1.input_size, traces=True, tc_trace=rule.tau_pre)
        target = DiehlAndCookNodes(
            n=case.n, traces=True, tc_trace=rule.tau_post, rest=W1.v_rest, reset=W1.v_reset,
            thresh=W1.v_threshold, refrac=int(W1.refractory), tc_decay=W1.tau_membrane,
            theta_plus=W1.theta_plus, tc_theta_decay=W1.tau_theta, one_spike=False,
        )
        self.network.add_layer(source, name="X")
        self.network.add_layer(target, name="Y")
        weights = torch.from_numpy(workloads.input_weights(case))
        feedforward = Connection(
            source=source, target=target, w=weights, update_rule=PostPre,
            nu=(rule.eta_pre, rule.eta_post), wmin=rule.w_min, wmax=rule.w_max,
        )
        inhibition = -W1.inhibition * (torch.ones(case.n, case.n) - torch.eye(case.n))
        lateral = Connection(source=target, target=target, w=inhibition)
        self.network.add_connection(feedforward, source="X", target="Y")
        self.network.add_connection(lateral, source="Y", target="Y")
        self.add_monitor(W1.steps_per_sample)
        self.finish()
        self.rates = torch.from_numpy(workloads.images_for_run(case, case.units)).to(device)

    def run(self, units: int) -> int:
        from bindsnet.encoding import poisson

        count = 0
        for sample in range(units):
            spikes = poisson(self.rates[sample % len(self.rates)], time=W1.steps_per_sample, dt=DT_MS, device=self.device)
            count += self.run_sample(spikes, W1.steps_per_sample)
        return count


class Forward(_Net):
    """W2 on BindsNET: Bernoulli inputs, a dense connection, LIF nodes, optional PostPre."""

    def __init__(self, case: Case, device: str) -> None:
        import torch
        from bindsnet.learning import PostPre
        from bindsnet.network.nodes import Input, LIFNodes
        from bindsnet.network.topology import Connection

        super().__init__(case, device)
        rule = FORWARD.stdp
        source = Input(n=FORWARD.input_size, traces=case.stdp, tc_trace=rule.tau_pre)
        target = LIFNodes(
            n=case.n, traces=case.stdp, tc_trace=rule.tau_post, rest=FORWARD.v_rest, reset=FORWARD.v_reset,
            thresh=FORWARD.v_threshold, refrac=int(FORWARD.refractory), tc_decay=FORWARD.tau_membrane,
        )
        self.network.add_layer(source, name="X")
        self.network.add_layer(target, name="Y")
        options: dict[str, Any] = {}
        if case.stdp:
            options = {"update_rule": PostPre, "nu": (rule.eta_pre, rule.eta_post), "wmin": rule.w_min, "wmax": rule.w_max}
        connection = Connection(source=source, target=target, w=torch.from_numpy(workloads.input_weights(case)), **options)
        self.network.add_connection(connection, source="X", target="Y")
        self.finish()
        self.monitor_steps = 0

    def run(self, units: int) -> int:
        import torch

        probability = FORWARD.input_rate_hz * DT_MS / 1000.0
        shape = (units, self.case.batch, FORWARD.input_size)
        spikes = torch.bernoulli(torch.full(shape, probability, device=self.device))
        return self.run_sample(spikes, units)

    def prepare(self, units: int) -> None:
        if units != self.monitor_steps:
            self.add_monitor(units)
            self.monitor_steps = units


def run_case(case: Case, protocol: Protocol, variant: str) -> dict[str, Any]:
    """Measure one case on BindsNET."""
    if case.delays:
        raise Unsupported("BindsNET 0.3.4 connections have no synaptic delays")
    if case.workload == "W1" and not case.stdp:
        raise Unsupported("W1 is defined with STDP on")

    import bindsnet.network  # noqa: F401 - imported before the memory baseline is read
    import torch

    torch.set_num_threads(protocol.threads)
    torch.manual_seed(0)
    device = variant
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Unsupported("--device cuda was requested but torch finds no CUDA device")
    build = (lambda: DiehlCook(case, device)) if case.workload == "W1" else (lambda: Forward(case, device))
    return measure(build, case, protocol, framework=FRAMEWORK, variant=device, versions=versions())


if __name__ == "__main__":
    sys.exit(main_for(FRAMEWORK, VARIANTS, run_case))
