"""S1, service overhead: the same job through ``ember serve`` and through ``ember run``.

This is the hook that :mod:`benchmarks.run` calls for S1. It should submit one
job spec through the REST API of a local ``ember serve`` and run the same spec
with ``ember run``. It then returns a record with the wall time of each path
and their ratio: keys ``serve_s``, ``run_s``, ``overhead_ratio``, and
``status`` set to ``"ok"``. Until the measurement is written it returns a record with status
``"not_measured"`` and the reason, which the report lists.
"""

from __future__ import annotations

from typing import Any

from benchmarks.protocol import Protocol


def measure_service_overhead(protocol: Protocol) -> dict[str, Any]:
    """Return the S1 record: service wall time against the local run of the same job.

    Args:
        protocol: the run's protocol (repeats and time budget).

    Returns:
        A record with ``status``; ``"not_measured"`` with a ``reason`` while
        the measurement is not written.
    """
    # TODO: submit a spec to a local `ember serve` on 127.0.0.1 and time it against `ember run`.
    return {
        "status": "not_measured",
        "workload": "S1",
        "reason": "the S1 measurement (ember serve against ember run) is not written yet",
        "protocol": {"repeats": protocol.repeats, "budget_s": protocol.budget_s},
    }
