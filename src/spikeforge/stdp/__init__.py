"""Spike-timing-dependent plasticity: learning rules as pure functions, the Diehl & Cook (2015)
network with a plain reference engine, a fast event-driven Numba engine and a batched torch mode
(several images learn from the same start, their updates averaged), and spike-count
classifiers (label assignment, all-activity and proportion-weighting votes)."""

from spikeforge.stdp.diehl_cook import (
    ENGINES,
    NEURON_MODELS,
    DiehlCookNetwork,
    DiehlCookParams,
    NetworkState,
    current_based_params,
    new_state,
    poisson_events,
    present_image,
    run_images,
    simulate_reference,
)
from spikeforge.stdp.diehl_cook_batched import (
    BATCH_REDUCTIONS,
    present_batch,
    run_images_batched,
    simulate_batch,
)
from spikeforge.stdp.labels import (
    LabelAssignment,
    assign_labels,
    confusion_matrix,
    predict_all_activity,
    predict_proportion,
)
from spikeforge.stdp.rules import (
    RULES,
    apply_bounded,
    decay_factor,
    depression_on_pre,
    normalize_columns,
    potentiation_on_post,
)

__all__ = [
    "BATCH_REDUCTIONS",
    "ENGINES",
    "NEURON_MODELS",
    "RULES",
    "DiehlCookNetwork",
    "DiehlCookParams",
    "LabelAssignment",
    "NetworkState",
    "apply_bounded",
    "assign_labels",
    "confusion_matrix",
    "current_based_params",
    "decay_factor",
    "depression_on_pre",
    "new_state",
    "normalize_columns",
    "poisson_events",
    "potentiation_on_post",
    "predict_all_activity",
    "predict_proportion",
    "present_batch",
    "present_image",
    "run_images",
    "run_images_batched",
    "simulate_batch",
    "simulate_reference",
]
