"""Ensemble STDP (Hanyu & Dang, "Accelerating distributed spike-timing-dependent-plasticity
learning"): shard the training data, train one Diehl & Cook sub-model per shard in parallel,
concatenate them, and compress the merged network by neuron similarity or a genetic search.

Everything here is a plain function of arrays; the Ray scheduler is
:mod:`spikeforge.ensemble.distributed` (imported only by the ensemble trainer,
:func:`spikeforge.run.ensemble.train_ensemble`).
"""

from spikeforge.ensemble.compression import (
    REMOVAL_RULES,
    Compression,
    compress,
    kept_after,
    kept_masks,
    removal_order,
    removal_priority,
)
from spikeforge.ensemble.genetic import GeneticResult, SubsetAccuracy, genetic_search
from spikeforge.ensemble.merge import concatenate_networks, select_neurons
from spikeforge.ensemble.sharding import (
    PRESENTATION_KINDS,
    SHARD_KINDS,
    dirichlet_shards,
    equal_shards,
    make_shards,
    presentations,
)
from spikeforge.ensemble.similarity import METRICS, pairwise_distance, upper_pairs
from spikeforge.ensemble.tasks import EnsembleError, ProgressWriter, read_progress

__all__ = [
    "METRICS",
    "PRESENTATION_KINDS",
    "REMOVAL_RULES",
    "SHARD_KINDS",
    "Compression",
    "EnsembleError",
    "GeneticResult",
    "ProgressWriter",
    "SubsetAccuracy",
    "compress",
    "concatenate_networks",
    "dirichlet_shards",
    "equal_shards",
    "genetic_search",
    "kept_after",
    "kept_masks",
    "make_shards",
    "pairwise_distance",
    "presentations",
    "read_progress",
    "removal_order",
    "removal_priority",
    "select_neurons",
    "upper_pairs",
]
