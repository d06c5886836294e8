"""Benchmark adapters for the peers, each run with the python of the peer's own environment.

Each module is a script: ``python -m benchmarks.peers.NAME_bench --case JSON``
runs one case and prints one ``BENCH-RESULT`` line (see
:mod:`benchmarks.protocol`). Each module imports its framework inside its
functions, so the orchestrator can import the module for its
``MODEL_DIFFERENCES`` (how the peer's model departs from Ember's, for the
report) without having the framework installed.
"""
