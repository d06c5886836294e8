"""Size limits that a job spec must respect before anything runs.

The limits protect a shared service from jobs that would exhaust memory or
run for weeks by mistake. They are read from environment variables with the
``EMBER_`` prefix, so a lab deployment sets them once for its workers and its
API (``EMBER_MAX_SYNAPSES=2000000000``). The defaults:

================================  ==================  ===================================
variable                          default             what it bounds
================================  ==================  ===================================
``EMBER_MAX_NEURONS``             10 000 000          neurons and input units, summed
``EMBER_MAX_SYNAPSES``            1 000 000 000       distinct synapses (shared weights once)
``EMBER_MAX_STEPS``               10 000 000 000      simulation steps of the whole job
``EMBER_MAX_MEMORY_BYTES``        68 719 476 736      estimated peak memory (64 GiB)
``EMBER_MAX_BATCH_SIZE``          4 096               samples simulated side by side
``EMBER_MAX_SAMPLES``             10 000 000          sample presentations of the whole job
================================  ==================  ===================================

The memory limit applies to :meth:`ember.spec.JobSpec.estimate`, an estimate
that counts parameters, state, spikes in flight and recorded spikes.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Upper bounds on the size of a job, read from ``EMBER_MAX_*`` environment variables.

    Pass an instance as the validation context to override them for one call:
    ``JobSpec.model_validate(document, context={"limits": Limits(max_neurons=1000)})``.
    """

    model_config = SettingsConfigDict(env_prefix="EMBER_", extra="ignore", frozen=True)

    max_neurons: int = Field(10_000_000, ge=1, description="neurons and input units of the network, summed")
    max_synapses: int = Field(1_000_000_000, ge=1, description="distinct synapses of the network")
    max_steps: int = Field(10_000_000_000, ge=1, description="simulation steps of the whole job")
    max_memory_bytes: int = Field(64 * 2**30, ge=1, description="estimated peak memory in bytes")
    max_batch_size: int = Field(4096, ge=1, description="samples simulated side by side")
    max_samples: int = Field(10_000_000, ge=1, description="sample presentations of the whole job")
