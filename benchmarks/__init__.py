"""Benchmarks of Ember against Inferno, BindsNET and Brian2 on shared workloads.

``python -m benchmarks.run`` builds the workloads of :mod:`benchmarks.workloads`
on Ember and on each peer, runs every (framework, case) pair in its own
process, and writes ``BENCHMARKS.md``. Each peer runs from its own virtual
environment outside the repository (:mod:`benchmarks.envs`).

The modules that peer processes import (``workloads``, ``protocol`` and
``peers``) need only the standard library and numpy, so they load in every
peer's environment.
"""
