"""Experiment configs, training loops, checkpoints and resume."""

from spikeforge.run.bptt import (
    TrainingInterrupted,
    build_model,
    evaluate,
    load_run_model,
    train_bptt,
)
from spikeforge.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from spikeforge.run.config import ConfigError, RunConfig, load_config
from spikeforge.run.train import train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "RunConfig",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "load_config",
    "load_run_model",
    "save_checkpoint",
    "train",
    "train_bptt",
]
