"""ctypes mirrors of the structures in ``kernels.c``; the field order and types must match it exactly."""

from __future__ import annotations

import ctypes

#: The structure layout version; ``ember_abi_version()`` of the library must return it.
ABI_VERSION = 3

NODE_POPULATION, NODE_POISSON, NODE_FRAMES = 0, 1, 2
CONN_DENSE, CONN_LATERAL, CONN_ONE_TO_ONE = 0, 1, 2
SYN_VOLTAGE, SYN_CHARGE, SYN_EXPONENTIAL, SYN_CONDUCTANCE, SYN_DOUBLE_EXPONENTIAL = 0, 1, 2, 3, 4
RULE_STDP, RULE_DIEHL_COOK = 0, 1
BOUNDS_NONE, BOUNDS_HARD, BOUNDS_SOFT = 0, 1, 2

_i32 = ctypes.c_int32
_i64 = ctypes.c_int64
_ptr = ctypes.c_void_p


class NodeStruct(ctypes.Structure):
    _fields_ = [
        ("kind", _i32),
        ("size", _i32),
        ("spikes", _ptr),
        ("v", _ptr),
        ("refractory", _ptr),
        ("v_rest", _ptr),
        ("v_reset", _ptr),
        ("v_threshold", _ptr),
        ("resistance", _ptr),
        ("decay", _ptr),
        ("refractory_steps", _ptr),
        ("adaptive", _i32),
        ("theta_shared", _i32),
        ("adapt", _i32),
        ("pad0", _i32),
        ("theta", _ptr),
        ("theta_decay", _ptr),
        ("theta_plus", _ptr),
        ("in_first", _i32),
        ("in_count", _i32),
        ("out_first", _i32),
        ("out_count", _i32),
        ("injection_first", _i32),
        ("injection_count", _i32),
        ("probability", _ptr),
        ("seed", ctypes.c_uint64),
        ("stream", _i64),
        ("frames", _ptr),
        ("counts", _ptr),
        ("record_start", _i64),
        ("record_stop", _i64),
        ("event_step", _ptr),
        ("event_index", _ptr),
        ("event_sample", _ptr),
        ("event_capacity", _i64),
        ("event_count", _i64),
    ]


class InjectionStruct(ctypes.Structure):
    _fields_ = [("amplitude", _ptr), ("start", _i64), ("stop", _i64)]


class ConnStruct(ctypes.Structure):
    _fields_ = [
        ("kind", _i32),
        ("synapse", _i32),
        ("pre", _i32),
        ("post", _i32),
        ("pre_size", _i32),
        ("post_size", _i32),
        ("slots", _i32),
        ("has_fraction", _i32),
        ("weight", _ptr),
        ("delay", _ptr),
        ("offset", _ptr),
        ("fraction", _ptr),
        ("in_flight", _ptr),
        ("bias", _ptr),
        ("dt", ctypes.c_double),
        ("synapse_a", _ptr),
        ("synapse_b", _ptr),
        ("synapse_decay_a", _ptr),
        ("synapse_decay_b", _ptr),
        ("synapse_parameter", _ptr),
        ("shift", _i32),
    ]


class RuleStruct(ctypes.Structure):
    _fields_ = [
        ("kind", _i32),
        ("conn", _i32),
        ("nearest", _i32),
        ("mean", _i32),
        ("bounds", _i32),
        ("full_pass", _i32),
        ("has_bound_min", _i32),
        ("has_bound_max", _i32),
        ("has_w_min", _i32),
        ("has_w_max", _i32),
        ("depress", _i32),
        ("potentiate", _i32),
        ("defer", _i32),
        ("arrival", _i32),
        # Out: the steps of the last call that kept the presynaptic traces as arrival steps.
        ("arrival_steps", _i32),
        ("pad1", _i32),
        ("decay_pre", ctypes.c_double),
        ("decay_post1", ctypes.c_double),
        ("decay_post2", ctypes.c_double),
        ("depression_factor", ctypes.c_double),
        ("potentiation_factor", ctypes.c_double),
        ("bound_min", ctypes.c_double),
        ("bound_max", ctypes.c_double),
        ("w_min", ctypes.c_double),
        ("w_max", ctypes.c_double),
        ("pre_trace", _ptr),
        ("post_trace1", _ptr),
        ("post_trace2", _ptr),
        ("delay", _ptr),
        ("bucket_start", _ptr),
        ("bucket_column", _ptr),
        ("max_delay", _i32),
        ("pad2", _i32),
        ("bits", _ptr),
        ("older", _ptr),
        ("reported", _ptr),
    ]


class NetStruct(ctypes.Structure):
    _fields_ = [
        ("batch", _i32),
        ("n_nodes", _i32),
        ("n_conns", _i32),
        ("n_rules", _i32),
        ("step0", _i64),
        ("steps", _i64),
        ("nodes", ctypes.POINTER(NodeStruct)),
        ("conns", ctypes.POINTER(ConnStruct)),
        ("rules", ctypes.POINTER(RuleStruct)),
        ("injections", ctypes.POINTER(InjectionStruct)),
        ("in_list", _ptr),
        ("out_list", _ptr),
    ]


def configure(library: ctypes.CDLL) -> None:
    """Declare the argument and result types of the library's functions."""
    library.ember_abi_version.argtypes = []
    library.ember_abi_version.restype = ctypes.c_int32
    for suffix in ("f32", "f64"):
        run = getattr(library, f"ember_run_{suffix}")
        run.argtypes = [ctypes.POINTER(NetStruct)]
        run.restype = ctypes.c_int64
        uniform = getattr(library, f"ember_uniform_{suffix}")
        uniform.argtypes = [ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p]
        uniform.restype = None
    library.ember_mix_seed3.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
    library.ember_mix_seed3.restype = ctypes.c_uint64
