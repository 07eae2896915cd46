"""Re-evaluate and plot a saved run directory (``spikeforge eval`` / ``spikeforge plot``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from spikeforge import viz
from spikeforge.run.bptt import (
    _EVAL_SEED_OFFSET,
    _load_data,
    _set_threads,
    evaluate,
    load_run_model,
    read_metrics,
)
from spikeforge.run.config import ConfigError, RunConfig, load_config

__all__ = ["evaluate_run", "plot_run", "load_run"]


def load_run(run_dir: Path) -> RunConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.toml); train into it first")
    return load_config(path)


def evaluate_run(run_dir: Path, steps: int | None = None) -> dict[str, Any]:
    """Test accuracy of a saved run at ``steps`` time steps (default: the config's test steps)."""
    config = load_run(run_dir)
    if config.method == "diehl-cook":
        from spikeforge.run.diehl_cook import evaluate_run_diehl_cook

        return evaluate_run_diehl_cook(Path(run_dir), config)
    if config.method == "ensemble":
        from spikeforge.run.ensemble import evaluate_run_ensemble

        return evaluate_run_ensemble(Path(run_dir), config)
    if config.method == "conv-stdp":
        from spikeforge.run.conv_stdp import evaluate_run_conv_stdp

        return evaluate_run_conv_stdp(Path(run_dir), config)
    front_end = _front_end(Path(run_dir), config)
    steps = config.encode.test_steps if steps is None else steps
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1; got {steps}")
    _set_threads(config.train.threads)
    data = _load_data(config, getattr(front_end, "output_size", None))
    model = load_run_model(Path(run_dir), config).eval()
    accuracy = evaluate(
        model, config, data.test_x, data.test_y, steps, config.seed + _EVAL_SEED_OFFSET, front_end
    )
    return {"run": str(run_dir), "test_steps": steps, "test_accuracy": accuracy}


def plot_run(run_dir: Path, max_steps: int = 20) -> list[Path]:
    """Draw a run's figures; return the PNG paths.

    accuracy.png (per epoch), accuracy_vs_steps.png (T = 1..max_steps), membranes.png (readout
    membranes of the first test sample, Bondarev's figure 3), raster_layer{k}.png for each
    hidden layer, and active_fraction.png for sparse-backward runs.
    """
    run_dir = Path(run_dir)
    config = load_run(run_dir)
    if config.method == "diehl-cook":
        from spikeforge.run.diehl_cook import plot_run_diehl_cook

        return plot_run_diehl_cook(run_dir, config)
    if config.method == "conv-stdp":
        from spikeforge.run.conv_stdp import plot_run_conv_stdp

        return plot_run_conv_stdp(run_dir)
    if config.method == "ensemble":
        from spikeforge.run.ensemble import plot_run_ensemble

        return plot_run_ensemble(run_dir, config)
    _set_threads(config.train.threads)
    front_end = _front_end(run_dir, config)
    paths = []
    if front_end is not None:
        from spikeforge.run.conv_stdp import CONV_DIR, plot_run_conv_stdp

        paths += plot_run_conv_stdp(run_dir / CONV_DIR)
    metrics = read_metrics(run_dir)
    if metrics:
        paths.append(viz.plot_accuracy_curves(metrics, run_dir / "accuracy.png", str(run_dir.name)))
    if any("active_fraction" in m for m in metrics):
        paths.append(
            viz.plot_active_fraction(metrics, run_dir / "active_fraction.png", str(run_dir.name))
        )
    data = _load_data(config, getattr(front_end, "output_size", None))
    model = load_run_model(run_dir, config).eval()
    steps = list(range(1, max_steps + 1))
    accuracy = [
        evaluate(
            model, config, data.test_x, data.test_y, t, config.seed + _EVAL_SEED_OFFSET, front_end
        )
        for t in steps
    ]
    (run_dir / "accuracy_vs_steps.json").write_text(
        json.dumps({"steps": steps, "test_accuracy": accuracy}) + "\n"
    )
    paths.append(viz.plot_accuracy_vs_steps(steps, accuracy, run_dir / "accuracy_vs_steps.png"))
    from spikeforge.run.bptt import encode

    generator = torch.Generator().manual_seed(config.seed)
    sample = encode(config, data.test_x[:1], config.encode.steps, generator)
    if front_end is not None:
        sample = front_end(sample)
    recording = model.record(sample)
    label = int(data.test_y[0])
    paths.append(
        viz.plot_membranes(
            recording.readout_membrane[:, 0].numpy(), label, run_dir / "membranes.png"
        )
    )
    for k, spikes in enumerate(recording.spikes, start=1):
        paths.append(
            viz.plot_raster(
                spikes[:, 0].numpy(), run_dir / f"raster_layer{k}.png", f"hidden layer {k}"
            )
        )
    return paths


def _front_end(run_dir: Path, config: RunConfig):
    """The frozen conv-STDP layer of a hybrid run (None for other methods)."""
    if config.method != "conv-stdp-hybrid":
        return None
    from spikeforge.run.conv_stdp import CONV_DIR, load_front_end

    return load_front_end(run_dir / CONV_DIR, config)
