"""Data sets for Ember: real digits read offline from pip packages, and synthetic spike data.

Use :func:`load_dataset` for every data set, and :data:`DATASETS` or
:func:`dataset_info` for what each holds. The pattern and random-dot
generators are also available on their own for experiments that need the
occurrence times or custom trials.
"""

from ember.data.packaged import DataIntegrityError, MissingDataPackageError
from ember.data.pattern import EmbeddedPattern, SpikePattern, embed_pattern, random_pattern
from ember.data.rdk import DIRECTION_NAMES, direction_vectors, rdk_trial
from ember.data.registry import DATASETS, SPLITS, DatasetInfo, dataset_info, load_dataset

__all__ = [
    "DATASETS",
    "DIRECTION_NAMES",
    "SPLITS",
    "DataIntegrityError",
    "DatasetInfo",
    "EmbeddedPattern",
    "MissingDataPackageError",
    "SpikePattern",
    "dataset_info",
    "direction_vectors",
    "embed_pattern",
    "load_dataset",
    "random_pattern",
    "rdk_trial",
]
