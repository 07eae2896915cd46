"""Dense vs sparse BPTT backward (Perez-Nieves & Goodman 2021) on Fashion-MNIST batches.

For hidden sizes 200, 400 and 1000 (784-h-h-10, configs/sparse-fmnist.toml's settings: latency
coding, T = 100, batch 256, threshold 1, inverse-square surrogate, active bound 0.2, max-over-time
readout, hidden init gain 6), two models with the same weights, one per backward, are timed on the
same batches, interleaved:

* backward: ``loss.backward()`` of the whole network after an untimed forward;
* step: forward + backward + Adam step on an already encoded batch;
* backward memory: bytes the forward keeps for backward (saved tensors, parameters excluded)
  plus the peak of tensor memory allocated during ``backward()`` (torch's allocator; on CUDA
  the allocator's peak over the backward alone, added to the saved bytes the same way);
* the active fraction of each hidden layer (active entries / T*B*N) at these weights.

Ratios are of medians over the repeats (``*_fastest``: of the fastest repeats, the better estimate
on a machine other jobs share). The loss is cross-entropy alone: a spike-rate regulariser adds a
dense gradient on every hidden spike, so the hidden layers then receive (and read only the active
entries of) a dense gradient instead of the sparse one handed over between layers.

``--config configs/sparse-fmnist-tuned.toml`` times the settings that meet the accuracy goal
(fast-sigmoid surrogate, active bound 0.5: about 4.5% active) instead of the paper's.

On the CPU, glibc is first asked to keep freed memory (``_common.keep_freed_memory``) so that
neither backward pays page faults on fresh pages for its large tensors: on this virtual machine
they made repeats of the same backward differ by half (``--fresh-pages`` turns this off).

Run: ``flock /tmp/spikeforge-timing.lock .venv/bin/python benchmarks/sparse_backward.py``
(``--device cuda`` on a GPU, where both models run the Triton kernels, or the PyTorch loops with
``SPIKEFORGE_TRITON=0``; ``--backend torch`` runs the PyTorch path on the CPU). Prints one JSON
object (see /work/shared/BENCHMARKS.md).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import (
    base_parser,
    describe_device,
    emit,
    keep_freed_memory,
    log,
    peak_tensor_bytes,
    set_threads,
    versions,
)

from spikeforge.data import latency_encode, load_vision
from spikeforge.neuron.lif import cuda_scan_kernels
from spikeforge.run.bptt import build_model
from spikeforge.run.config import load_config

HIDDEN = (200, 400, 1000)
BOUNDS = (0.05, 0.1, 0.2, 0.5, 1.0)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sparse-fmnist.toml"


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn()`` runs (params excluded)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter) and not tensor.requires_grad:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _measure(models, spikes, labels, device, repeats):
    """Interleaved timings and memory of each model (a dict name -> model)."""
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=2e-4) for n, m in models.items()}
    times = {n: {"backward": [], "step": []} for n in models}
    result: dict = {n: {} for n in models}

    def loss_of(model):
        return F.cross_entropy(model(spikes), labels)

    for model in models.values():  # warm-up (JIT, allocator)
        loss_of(model).backward()
        model.zero_grad(set_to_none=True)
    for repeat in range(repeats):
        for name, model in models.items():
            loss = loss_of(model)
            _sync(device)
            start = time.perf_counter()
            loss.backward()
            _sync(device)
            times[name]["backward"].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        for name, model in models.items():
            _sync(device)
            start = time.perf_counter()
            loss = loss_of(model)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            _sync(device)
            times[name]["step"].append(time.perf_counter() - start)
        log(
            f"  repeat {repeat + 1}/{repeats}: "
            + ", ".join(
                f"{n} backward {t['backward'][-1] * 1e3:.1f} ms step {t['step'][-1] * 1e3:.1f} ms"
                for n, t in times.items()
            )
        )
    for name, model in models.items():
        holder = {}

        def forward(model=model, holder=holder):
            holder["loss"] = loss_of(model)

        saved = _saved_bytes(forward)
        loss = holder.pop("loss")
        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            loss.backward()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = peak_tensor_bytes(loss.backward)
        model.zero_grad(set_to_none=True)
        result[name] = {
            "backward_seconds": statistics.median(times[name]["backward"]),
            "step_seconds": statistics.median(times[name]["step"]),
            # the fastest repeat: on a shared machine, the closest to an undisturbed run
            "backward_seconds_min": min(times[name]["backward"]),
            "step_seconds_min": min(times[name]["step"]),
            "backward_repeats_ms": [round(t * 1e3, 2) for t in times[name]["backward"]],
            "step_repeats_ms": [round(t * 1e3, 2) for t in times[name]["step"]],
            "saved_for_backward_bytes": saved,
            "backward_peak_bytes": peak,
            "backward_memory_bytes": saved + peak,
        }
    return result


def _bound_scaling(args, spikes, labels, device, repeats) -> list[dict]:
    """At 200 hidden, the sparse backward for several active bounds: its time and memory
    should fall with the active fraction (same weights; the dense backward for reference)."""
    overrides = ["model.layers=[784,200,200,10]", f"model.backend={args.backend}"]
    models = {}
    for bound in BOUNDS:
        config = load_config(
            args.config, [*overrides, "model.backward=sparse", f"model.active_bound={bound}"]
        )
        torch.manual_seed(args.seed)
        models[f"bound {bound}"] = build_model(config).to(device)
    log(f"hidden 200: sparse backward at active bounds {BOUNDS} ({repeats} repeats)")
    measured = _measure(models, spikes, labels, device, repeats)
    rows = []
    for bound in BOUNDS:
        model, result = models[f"bound {bound}"], measured[f"bound {bound}"]
        rows.append(
            {
                "active_bound": bound,
                "active_fraction": [round(layer.last_active_fraction, 5) for layer in model.hidden],
                "backward_ms": round(result["backward_seconds"] * 1e3, 2),
                "step_ms": round(result["step_seconds"] * 1e3, 2),
                "backward_memory_bytes": result["backward_memory_bytes"],
            }
        )
        log(f"  bound {bound}: {rows[-1]}")
    return rows


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--config", type=Path, default=CONFIG, help="the model's settings")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "numba", "torch"],
        help="auto: Numba on the CPU, PyTorch on CUDA; torch on the CPU times the CUDA path's code",
    )
    parser.add_argument(
        "--fresh-pages",
        action="store_true",
        help="leave glibc's malloc as it is (fresh pages, and page faults, for large tensors)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    allocator = "glibc default"
    if device.type == "cpu":
        set_threads(args.threads)
        if not args.fresh_pages and keep_freed_memory():
            allocator = "glibc keeps freed memory (mmap threshold 32 MiB, no trim), both backwards"
    repeats = 3 if args.quick else 7
    images = load_vision("fashion-mnist", "train", limit=args.batch)
    spikes = latency_encode(images.flat_intensities(), 100).to(device)
    labels = images.labels.to(device)
    sizes: dict = {}
    ratios: dict = {}
    for hidden in HIDDEN:
        overrides = [f"model.layers=[784,{hidden},{hidden},10]", f"model.backend={args.backend}"]
        models = {}
        for backward in ("dense", "sparse"):
            config = load_config(args.config, [*overrides, f"model.backward={backward}"])
            torch.manual_seed(args.seed)
            models[backward] = build_model(config).to(device)
        log(f"hidden {hidden}: timing dense vs sparse backward ({repeats} repeats)")
        measured = _measure(models, spikes, labels, device, repeats)
        fractions = [layer.last_active_fraction for layer in models["sparse"].hidden]
        dense, sparse = measured["dense"], measured["sparse"]
        entry = {
            "dense": dense,
            "sparse": sparse,
            "active_fraction": fractions,
            "spike_fraction": None,
        }
        with torch.no_grad():
            _, hidden_spikes = models["sparse"].forward_with_spikes(spikes)
            entry["spike_fraction"] = [float(s.mean()) for s in hidden_spikes]
        sizes[f"h{hidden}"] = entry
        ratios[f"backward_speedup_h{hidden}"] = round(
            dense["backward_seconds"] / sparse["backward_seconds"], 2
        )
        ratios[f"step_speedup_h{hidden}"] = round(dense["step_seconds"] / sparse["step_seconds"], 2)
        for kind in ("backward", "step"):
            ratios[f"{kind}_speedup_h{hidden}_fastest"] = round(
                dense[f"{kind}_seconds_min"] / sparse[f"{kind}_seconds_min"], 2
            )
        ratios[f"backward_memory_ratio_h{hidden}"] = round(
            dense["backward_memory_bytes"] / sparse["backward_memory_bytes"], 2
        )
        log(
            f"hidden {hidden}: backward {ratios[f'backward_speedup_h{hidden}']}x, step "
            f"{ratios[f'step_speedup_h{hidden}']}x, memory "
            f"{ratios[f'backward_memory_ratio_h{hidden}']}x, active {fractions}"
        )
    ratios["active_fraction_h200"] = [round(f, 5) for f in sizes["h200"]["active_fraction"]]
    scaling = _bound_scaling(args, spikes, labels, device, repeats)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else describe_device(args.threads)
    )
    emit(
        {
            "benchmark": "sparse_backward",
            "device": device_name,
            "versions": versions("torch", "numpy", "numba"),
            "seed": args.seed,
            "quick": args.quick,
            "batch": args.batch,
            "steps": 100,
            "config": args.config.name,
            "backend": args.backend,
            # on CUDA: the Triton kernels, or the PyTorch loops (SPIKEFORGE_TRITON=0)
            "cuda_kernels": cuda_scan_kernels(device),
            "peer": "spikeforge dense backward (same forward, same weights)",
            "allocator": allocator,
            "ratios": ratios,
            "sizes": sizes,
            "active_bound_scaling_h200": scaling,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
