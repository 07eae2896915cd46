"""One entry point for every training method: ``train(config, out)`` dispatches on
``config.method`` to that method's trainer, each writing the same run directory layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikeforge.run.config import ConfigError, RunConfig

__all__ = ["train"]


def train(config: RunConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """Train what ``config`` describes into ``out``; return the summary (also ``summary.json``)."""
    if config.method == "bptt":
        from spikeforge.run.bptt import train_bptt

        return train_bptt(config, out, resume=resume)
    elif config.method == "diehl-cook":
        from spikeforge.run.diehl_cook import train_diehl_cook

        return train_diehl_cook(config, out, resume=resume)
    elif config.method == "conv-stdp":
        from spikeforge.run.conv_stdp import train_conv_stdp

        return train_conv_stdp(config, out, resume=resume)
    elif config.method == "conv-stdp-hybrid":
        from spikeforge.run.conv_stdp import train_conv_stdp_hybrid

        return train_conv_stdp_hybrid(config, out, resume=resume)
    elif config.method == "ensemble":
        from spikeforge.run.ensemble import train_ensemble

        return train_ensemble(config, out, resume=resume)
    raise ConfigError(f"method {config.method!r} has no trainer")
