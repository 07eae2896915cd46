"""BPTT training of fully connected LIF networks (Bondarev's method), readable top to bottom.

Writes into the run directory: ``config.toml``, ``metrics.jsonl`` (one line per epoch),
``checkpoint.safetensors`` + ``checkpoint.json`` (after every epoch, and on Ctrl-C mid-epoch) and
``summary.json``. A resumed run replays exactly: model, Adam state, the epoch's sample order and
both random streams are restored, so it ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from spikeforge.data import latency_encode, poisson_encode
from spikeforge.data.augment import shift_and_flip
from spikeforge.data.vision import load_vision
from spikeforge.neuron.lif import cuda_scan_kernels
from spikeforge.neuron.sparse import spike_counts
from spikeforge.nn import SpikingMLP
from spikeforge.run.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)
from spikeforge.run.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    load_config,
    save_config,
)

__all__ = [
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "train_bptt",
    "encode",
    "load_run_model",
    "rate_regularizer",
]

_EVAL_SEED_OFFSET = 1_000_003


class TrainingInterrupted(RuntimeError):
    """Raised after Ctrl-C once the checkpoint is safely written."""


def build_model(config: RunConfig) -> SpikingMLP:
    """The network a config describes (weights drawn from the current torch RNG)."""
    m = config.model
    model = SpikingMLP(
        m.layers,
        m.beta,
        m.thresholds,
        surrogate=m.surrogate,
        surrogate_scale=m.surrogate_scale or None,
        readout_beta=m.readout_beta,
        backend=m.backend,
        precision=m.precision,
        backward=m.backward,
        active_bound=m.active_bound or None,
        readout=m.readout,
    )
    if m.weight_gain != 1.0:
        # Threshold 1 with sparse latency inputs needs larger weights than Bondarev's init.
        with torch.no_grad():
            for layer in model.hidden:
                layer.weight.mul_(m.weight_gain)
    return model


def encode(
    config: RunConfig,
    intensities: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Intensities ``[B, N]`` -> uint8 spikes ``[T, B, N]`` by the configured encoder, on
    ``device`` (default: the intensities'; ``events``: an
    :class:`~spikeforge.data.events.EventSet` binned into ``steps`` bins). The latency code is
    built on the device from spike steps computed on the CPU (the same code either way); the
    random codes are drawn on the CPU and copied, so a seed gives the same spikes everywhere."""
    if config.encode.kind == "latency":
        return latency_encode(
            intensities,
            steps,
            tau=config.encode.latency_tau,
            intensity_threshold=config.encode.latency_threshold,
            device=device,
        )
    spikes = (
        intensities.to_dense(steps)
        if config.encode.kind == "events"
        else poisson_encode(intensities, steps, generator)
    )
    return spikes if device is None else spikes.to(device)


def rate_regularizer(hidden: list[torch.Tensor], config: RunConfig) -> torch.Tensor | None:
    """Spike-rate regularisers on each hidden layer's spike counts ``c[b, j] = sum_t s``.

    Lower bound (silent neurons): ``strength * mean_j relu(bound - mean_b c[b, j])^2``; upper
    bound (overall activity): ``strength * mean_b relu(mean_j c[b, j] - bound)^2``, summed over
    layers. The form follows Zenke & Vogels (2021), which Perez-Nieves & Goodman (2021) use.
    None when both strengths are 0.
    """
    t = config.train
    if not (t.rate_lower_strength or t.rate_upper_strength):
        return None
    total = hidden[0].new_zeros(())
    for spikes in hidden:
        counts = spike_counts(spikes)  # [B, N]: sum over time (a sparse layer's own counts)
        if t.rate_lower_strength:
            low = F.relu(t.rate_lower_bound - counts.mean(0))
            total = total + t.rate_lower_strength * (low**2).mean()
        if t.rate_upper_strength:
            high = F.relu(counts.mean(1) - t.rate_upper_bound)
            total = total + t.rate_upper_strength * (high**2).mean()
    return total


@torch.no_grad()
def evaluate(
    model: SpikingMLP,
    config: RunConfig,
    intensities: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    seed: int,
    front_end: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Test accuracy (0..1) at ``steps`` time steps, with a fixed encoder seed.

    Intensities and labels stay on the CPU (the encoder runs there, so a seed gives the same
    spikes on every device); only the uint8 spikes move to the model's device. ``front_end``
    maps those spikes to the model's inputs (the frozen conv-STDP layer of the hybrid).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    batch = config.train.eval_batch_size
    for start in range(0, len(labels), batch):
        x = encode(config, intensities[start : start + batch], steps, generator, device)
        scores = model(x if front_end is None else front_end(x))
        correct += int((scores.argmax(1).cpu() == labels[start : start + batch]).sum())
    return correct / max(len(labels), 1)


@dataclass
class _Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    image_shape: tuple[int, int] | None = None  # (H, W) of vision data; None for event data


def _load_data(config: RunConfig, model_inputs: int | None = None) -> _Data:
    """The dataset, checked against ``model.layers`` (whose first entry must be
    ``model_inputs`` when a front end sits between the data and the model)."""
    root = config.data.root or None
    if config.data.name in ("nmnist", "shd"):
        from spikeforge.data.events import load_events

        kwargs = {"root": root, "bin_ms": config.data.bin_ms}
        train_set = load_events(config.data.name, "train", limit=config.data.limit, **kwargs)
        test_set = load_events(config.data.name, "test", limit=config.data.test_limit, **kwargs)
        units, classes = train_set.units_count, train_set.classes
        if config.model.layers[0] != units or config.model.layers[-1] != classes:
            raise ConfigError(
                f"{config.data.name} has {units} inputs and {classes} classes but model.layers "
                f"is {config.model.layers}; set --set model.layers=[{units},...,{classes}]"
            )
        if config.train.augment_shift or config.train.augment_flip:
            raise ConfigError(
                f"train.augment_shift and train.augment_flip apply to images; {config.data.name} "
                "is event data: set them to 0 and false"
            )
        return _Data(train_set, train_set.labels, test_set, test_set.labels)
    train = load_vision(config.data.name, "train", root=root, limit=config.data.limit)
    test = load_vision(config.data.name, "test", root=root, limit=config.data.test_limit)
    inputs = model_inputs or train.flat_intensities().shape[1]
    if config.model.layers[0] != inputs or config.model.layers[-1] != 10:
        source = "the conv-STDP features give" if model_inputs else f"{config.data.name} has"
        raise ConfigError(
            f"{source} {inputs} inputs and 10 classes but model.layers is "
            f"{config.model.layers}; set --set model.layers=[{inputs},...,10]"
        )
    height, width = train.images.shape[1:]
    if config.train.augment_shift >= min(height, width):
        raise ConfigError(
            f"train.augment_shift must be below the image side ({min(height, width)} for "
            f"{config.data.name}); got {config.train.augment_shift}"
        )
    return _Data(
        train.flat_intensities(),
        train.labels,
        test.flat_intensities(),
        test.labels,
        (height, width),
    )


def _augmented(
    config: RunConfig, data: _Data, intensities: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Training intensities ``[B, H*W]`` after ``train.augment_shift`` / ``augment_flip``
    (:func:`spikeforge.data.augment.shift_and_flip`; drawn from the encoder's stream)."""
    shift, flip = config.train.augment_shift, config.train.augment_flip
    if not (shift or flip) or data.image_shape is None:
        return intensities
    images = intensities.reshape(len(intensities), *data.image_shape)
    return shift_and_flip(images, generator, shift, flip).reshape(len(intensities), -1)


def _set_threads(threads: int) -> None:
    """Use ``threads`` threads in torch and Numba (0: torch's default, all cores).

    Numba's OpenMP layer shares the process's OpenMP thread count with torch, so setting Numba's
    count resets torch's: torch is set last.
    """
    count = threads or torch.get_num_threads()
    try:
        import numba

        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    torch.set_num_threads(count)


def _rng_state(generator: torch.Generator) -> torch.Tensor:
    return generator.get_state().clone()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    tensors, steps = {}, []
    state = optimizer.state_dict()["state"]
    for index in sorted(state):
        entry = state[index]
        for key, value in entry.items():
            if key != "step":
                tensors[f"optim.{index}.{key}"] = value
        steps.append([index, float(entry["step"])])
    return tensors, steps


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], steps: list
) -> None:
    state_dict = optimizer.state_dict()
    params = [param for group in optimizer.param_groups for param in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for index, step in steps:
        entry: dict[str, Any] = {"step": torch.tensor(step)}
        prefix = f"optim.{index}."
        param = params[int(index)]
        for name, value in tensors.items():
            if name.startswith(prefix):
                if value.shape == param.shape:  # saved contiguous; back in the parameter's layout
                    value = torch.empty_like(param).copy_(value)
                entry[name[len(prefix) :]] = value
        state[int(index)] = entry
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


@dataclass
class _Progress:
    """Where training stands: what a checkpoint must carry to replay the rest exactly."""

    epoch: int = 0  # epochs fully done
    batch: int = 0  # batches done inside the current epoch
    train_seconds: float = 0.0
    train_samples: int = 0
    epoch_seconds: float = 0.0
    epoch_loss: float = 0.0
    epoch_correct: int = 0
    epoch_seen: int = 0
    active_sums: list[float] = field(default_factory=list)  # per layer, summed over batches


def _save(
    out: Path,
    model: SpikingMLP,
    optimizer: torch.optim.Optimizer,
    progress: _Progress,
    rngs: dict[str, torch.Generator],
    order: torch.Tensor | None,
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, optim_steps = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors.update({f"rng.{name}": _rng_state(g) for name, g in rngs.items()})
    if order is not None:
        tensors["order"] = order.cpu()
    meta = {"progress": vars(progress), "optimizer_steps": optim_steps, "complete": order is None}
    save_checkpoint(out, tensors, meta)


def load_run_model(run_dir: Path, config: RunConfig) -> SpikingMLP:
    """The model saved in a run directory's checkpoint."""
    tensors, _ = load_checkpoint(run_dir)
    model = build_model(config)
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    return model


def _scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, batches: int, done: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-batch learning-rate factor: 1 (constant) or a cosine from 1 to 0 over all batches."""
    total = max(config.train.epochs * batches, 1)
    if config.train.lr_schedule == "cosine":

        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    else:

        def factor(step: int) -> float:
            return 1.0

    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=done - 1)


def _check_resumable(
    saved: RunConfig,
    requested: RunConfig,
    also_ignore: frozenset[tuple[str, str]] = frozenset(),
    sections: tuple[str, ...] | None = None,
) -> None:
    """A resumed run must be the same experiment; only epochs, threads and progress (and the
    ``(section, key)`` pairs in ``also_ignore``) may change. ``sections`` limits the check to
    those top-level keys and config sections (default: all)."""
    ignore = {("train", "epochs"), ("train", "threads"), ("train", "progress"), *also_ignore}
    saved_dict, requested_dict = config_to_dict(saved), config_to_dict(requested)
    for section, values in requested_dict.items():
        if sections is not None and section not in sections:
            continue
        if not isinstance(values, dict):
            if values != saved_dict[section]:
                raise ConfigError(
                    f"cannot resume: {section} was {saved_dict[section]!r}, now {values!r}; "
                    "resume with the run's own config.toml"
                )
            continue
        for key, value in values.items():
            if (section, key) not in ignore and value != saved_dict[section][key]:
                raise ConfigError(
                    f"cannot resume: {section}.{key} was {saved_dict[section][key]!r}, now "
                    f"{value!r}; resume with the run's own config.toml"
                )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run directory's ``metrics.jsonl``, one per non-blank line."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _append_metrics(out: Path, record: dict[str, Any]) -> None:
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_metrics(out: Path, epochs_done: int) -> None:
    """Drop metric lines of epochs after the checkpoint (a run killed between the two writes)."""
    path = out / "metrics.jsonl"
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("epoch", 0) <= epochs_done]
        atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def train_bptt(
    config: RunConfig,
    out: Path,
    resume: bool = False,
    on_batch: Callable[[int, int, float], None] | None = None,
    log: Callable[[str], None] = print,
    front_end: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train, evaluate each epoch, checkpoint; return the summary (also in ``summary.json``).

    Args:
        config: validated run config (method ``bptt``).
        out: run directory (created).
        resume: continue from ``out``'s checkpoint.
        on_batch: called as ``on_batch(epoch, batch, loss)`` after each optimiser step.
        log: where one-line messages go.
        front_end: a frozen map from encoded spikes ``[T, B, N]`` (on the device) to the
            model's input spikes; its ``output_size`` is the model's input width.
    """
    out = prepare_run_dir(out, resume)
    _set_threads(config.train.threads)
    device = torch.device(config.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device is cuda but no CUDA device is available; use --set train.device=cpu"
        )
    data = _load_data(config, getattr(front_end, "output_size", None))

    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.train.lr,
        betas=(config.train.adam_beta1, config.train.adam_beta2),
        weight_decay=config.train.weight_decay,
    )
    n_train = len(data.train_y)
    batches = math.ceil(n_train / config.train.batch_size)
    scheduler = _scheduler(optimizer, config, batches)
    rngs = {
        "shuffle": torch.Generator().manual_seed(config.seed),
        "encode": torch.Generator().manual_seed(config.seed + 1),
    }
    progress = _Progress()
    order: torch.Tensor | None = None
    if resume:
        tensors, meta = load_checkpoint(out)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _check_resumable(load_config(out / "config.toml"), config)
        _restore_optimizer(
            optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["optimizer_steps"]
        )
        for name, generator in rngs.items():
            generator.set_state(tensors[f"rng.{name}"])
        progress = _Progress(**meta["progress"])
        scheduler = _scheduler(
            optimizer, config, batches, done=progress.epoch * batches + progress.batch
        )
        order = tensors.get("order")
        _truncate_metrics(out, progress.epoch)
        log(f"resuming {out} at epoch {progress.epoch + 1}, batch {progress.batch}")
    else:
        (out / "metrics.jsonl").write_text("")
    save_config(config, out / "config.toml")

    batch_size = config.train.batch_size
    for epoch in range(progress.epoch + 1, config.train.epochs + 1):
        if order is None:
            order = torch.randperm(n_train, generator=rngs["shuffle"])
        bar = tqdm(
            total=batches,
            initial=progress.batch,
            desc=f"epoch {epoch}/{config.train.epochs}",
            disable=not config.train.progress,
            leave=False,
            unit="batch",
        )
        model.train()
        # The encoder stream as of the batch in progress: a batch cut short by Ctrl-C is redone
        # on resume and must draw the same input spikes again.
        b, encode_state = progress.batch, rngs["encode"].get_state()
        try:
            for b in range(progress.batch, batches):
                encode_state = rngs["encode"].get_state()
                started = time.perf_counter()
                index = order[b * batch_size : (b + 1) * batch_size]
                images = _augmented(config, data, data.train_x[index], rngs["encode"])
                spikes = encode(config, images, config.encode.steps, rngs["encode"], device)
                if front_end is not None:
                    spikes = front_end(spikes)
                scores, hidden = model.forward_with_spikes(spikes)
                labels = data.train_y[index].to(device)
                loss = F.cross_entropy(scores, labels, label_smoothing=config.train.label_smoothing)
                regularizer = rate_regularizer(hidden, config)
                if regularizer is not None:
                    loss = loss + regularizer
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at epoch {epoch}, batch {b}; lower train.lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                elapsed = time.perf_counter() - started
                progress.batch = b + 1
                progress.epoch_seconds += elapsed
                progress.epoch_loss += loss.item() * len(index)
                progress.epoch_correct += int((scores.argmax(1) == labels).sum())
                progress.epoch_seen += len(index)
                fractions = [layer.last_active_fraction for layer in model.hidden]
                if all(f is not None for f in fractions):
                    if not progress.active_sums:
                        progress.active_sums = [0.0] * len(fractions)
                    progress.active_sums = [
                        a + f for a, f in zip(progress.active_sums, fractions, strict=True)
                    ]
                bar.update(1)
                if b % 20 == 0:
                    bar.set_postfix(
                        loss=f"{progress.epoch_loss / progress.epoch_seen:.4f}",
                        acc=f"{progress.epoch_correct / progress.epoch_seen:.4f}",
                    )
                if on_batch is not None:
                    on_batch(epoch, b, loss.item())
        except KeyboardInterrupt:
            bar.close()
            if progress.batch == b:  # batch b was not finished
                rngs["encode"].set_state(encode_state)
            _save(out, model, optimizer, progress, rngs, order)
            raise TrainingInterrupted(
                f"interrupted at epoch {epoch}, batch {progress.batch}; checkpoint saved in {out}; "
                f"continue with: spikeforge train {out / 'config.toml'} --out {out} --resume"
            ) from None
        bar.close()

        model.eval()
        eval_started = time.perf_counter()
        test_accuracy = evaluate(
            model,
            config,
            data.test_x,
            data.test_y,
            config.encode.test_steps,
            config.seed + _EVAL_SEED_OFFSET,
            front_end,
        )
        record = {
            "epoch": epoch,
            "train_loss": progress.epoch_loss / progress.epoch_seen,
            "train_accuracy": progress.epoch_correct / progress.epoch_seen,
            "test_accuracy": test_accuracy,
            "test_steps": config.encode.test_steps,
            "epoch_seconds": progress.epoch_seconds,
            "lr": optimizer.param_groups[0]["lr"],
            "eval_seconds": time.perf_counter() - eval_started,
            "samples_per_second": progress.epoch_seen / progress.epoch_seconds,
        }
        if progress.active_sums:
            # Mean over the epoch's batches of active entries / (T * B * N), per hidden layer.
            record["active_fraction"] = [a / batches for a in progress.active_sums]
        log(
            f"epoch {epoch}: loss {record['train_loss']:.4f}  "
            f"train {record['train_accuracy']:.4f}  "
            f"test {test_accuracy:.4f}  {record['samples_per_second']:.0f} samples/s"
        )
        progress = _Progress(
            epoch=epoch,
            train_seconds=progress.train_seconds + progress.epoch_seconds,
            train_samples=progress.train_samples + progress.epoch_seen,
        )
        order = None
        _append_metrics(out, record)
        _save(out, model, optimizer, progress, rngs, None)

    metrics = read_metrics(out)
    summary = {
        "method": config.method,
        "dataset": config.data.name,
        "epochs": progress.epoch,
        "test_accuracy": metrics[-1]["test_accuracy"] if metrics else float("nan"),
        "best_test_accuracy": max((m["test_accuracy"] for m in metrics), default=float("nan")),
        "final_train_accuracy": metrics[-1]["train_accuracy"] if metrics else float("nan"),
        "test_steps": config.encode.test_steps,
        "train_seconds": progress.train_seconds,
        "train_samples": progress.train_samples,
        "samples_per_second": progress.train_samples / max(progress.train_seconds, 1e-9),
        "machine": _machine(device),
        "torch": torch.__version__,
        "config": config_to_dict(config),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _machine(device: torch.device) -> str:
    """The summary's ``machine``: the GPU's name and what runs the LIF scans on CUDA, else the
    CPU and its threads."""
    host = f"{platform.machine()} {_cpu_name()}"
    if device.type == "cuda":
        scans = cuda_scan_kernels(device)
        return f"{torch.cuda.get_device_name(device)} (host {host}; LIF scans: {scans})"
    return f"{host}, {torch.get_num_threads()} threads"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"
