"""Connections between nodes, with per-synapse heterogeneous delays.

Every connection type delivers spikes through the same ring buffer of future
input and presents the same learning view (see
:class:`~ember.connections.base.Connection`), so every learning rule works on
every connection type.
"""

from ember.connections.base import Connection
from ember.connections.conv import Conv2d
from ember.connections.dense import Dense, Lateral
from ember.connections.one_to_one import OneToOne
from ember.connections.sparse import Sparse

__all__ = ["Connection", "Conv2d", "Dense", "Lateral", "OneToOne", "Sparse"]
