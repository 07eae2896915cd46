"""Helpers shared by the benchmarks in this folder (imported as ``_common``).

Every benchmark measures spikeforge and its peers in the same process, interleaved inside each
repeat (a, b, c, a, b, c, ...) so that machine noise hits all contenders alike, reports the median
(and min/max) over repeats, writes progress to stderr and prints one JSON object as the last line
of stdout. See ``/work/shared/BENCHMARKS.md`` for the conventions.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "base_parser",
    "cpu_model",
    "describe_device",
    "emit",
    "gemm_rate",
    "interleaved",
    "keep_freed_memory",
    "log",
    "max_rss_mib",
    "peak_tensor_bytes",
    "set_threads",
    "summarize",
    "versions",
]

_START = time.perf_counter()


def log(message: str) -> None:
    """Progress line on stderr, prefixed with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark accepts: ``--quick``, ``--seed``, ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, same code paths (< 5 min on 2 cores)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    return parser


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse: blocks up to 32 MiB come from the heap
    (not a fresh ``mmap`` each time) and the heap is never trimmed. Every large tensor is then
    allocated without page faults on fresh pages, which on this virtual machine made the same
    backward pass take 8 ms or 12 ms from one repeat to the next. Process-wide, so it applies
    to every contender of a benchmark alike. Returns whether it took effect (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 2**31 - 1)
        )
    except (OSError, AttributeError):
        return False


def set_threads(threads: int) -> None:
    """Pin PyTorch's intra-op pool (and Numba's, when installed) to ``threads`` threads."""
    torch.set_num_threads(threads)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_device(threads: int) -> str:
    """``"cpu (2 threads), <model>"``: the device key of the JSON."""
    return f"cpu ({threads} threads), {cpu_model()}"


def versions(*packages: str) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def interleaved(
    contenders: Mapping[str, Callable[[], float]],
    repeats: int,
    warmup: int = 1,
    label: str = "",
) -> dict[str, list[float]]:
    """Time each contender ``repeats`` times, interleaved: a, b, c, a, b, c, ...

    Each callable does a fixed amount of work and returns how many units it processed (samples,
    multiply-adds, ...). ``warmup`` untimed rounds run first (JIT compilation, allocator caches,
    optimiser state), also interleaved.

    Returns:
        Per contender, the rate (units per second) of every timed repeat, in order.
    """
    for round_ in range(warmup):
        for name, fn in contenders.items():
            fn()
            log(f"{label} warm-up {round_ + 1}/{warmup}: {name} done")
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(repeats):
        line = []
        for name, fn in contenders.items():
            start = time.perf_counter()
            units = fn()
            elapsed = time.perf_counter() - start
            rates[name].append(units / elapsed)
            line.append(f"{name} {units / elapsed:,.0f}/s")
        log(f"{label} repeat {repeat + 1}/{repeats}: " + ", ".join(line))
    return rates


def summarize(values: Iterable[float], digits: int = 1) -> dict[str, Any]:
    """Median, min and max of a list of rates, plus the raw values."""
    values = list(values)
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "repeats": [round(v, digits) for v in values],
    }


def gemm_rate(m: int, k: int, n: int, seconds: float = 0.25) -> Callable[[], float]:
    """A contender for :func:`interleaved`: fp32 ``[m, k] @ [k, n]`` GEMMs for about ``seconds``.

    Returns multiply-adds done (m*k*n per product), so the measured rate is MAC/s.
    """
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    per_call = max(time.perf_counter() - start, 1e-6)
    calls = max(3, int(seconds / per_call))

    def run() -> float:
        for _ in range(calls):
            torch.mm(a, b, out=out)
        return float(calls * m * k * n)

    return run


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """Peak growth of live tensor memory (bytes) while ``fn()`` runs, from torch's allocator.

    Runs ``fn`` once under ``torch.profiler`` with ``profile_memory=True``, orders every allocation
    and free the CPU allocator reported by time, and returns the maximum of their running sum: the
    highest number of bytes allocated during ``fn`` and alive at once. Only frees of blocks
    allocated during ``fn`` lower the level: the profiler also reports the free of a block
    allocated before it started whenever that address was allocated in an earlier profiled call
    (so, depending on where malloc happened to put it), and counting those made the same
    backward's peak differ by up to 1.3 MB from one run to the next. Memory not allocated through
    torch (Python objects, MKL/oneDNN scratch, Numba's own arrays) is not seen.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        size = getattr(fields, "alloc_size", None)
        if size is not None:
            events.append((node.start_time_ns, int(size), fields.ptr))
    events.sort()
    live: dict[int, int] = {}  # address -> size of the blocks allocated during fn, still alive
    level = peak = 0
    for _, size, address in events:
        if size > 0:
            live[address] = size
            level += size
            peak = max(peak, level)
        elif address in live:
            level -= live.pop(address)
    return peak


def max_rss_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(result: Mapping[str, Any], out: Path | None = None) -> None:
    """Print ``result`` as one JSON line (the last line of stdout); also write it to ``out``."""
    text = json.dumps(result, sort_keys=False)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + os.linesep)
        log(f"wrote {out}")
    sys.stdout.flush()
    print(text, flush=True)
