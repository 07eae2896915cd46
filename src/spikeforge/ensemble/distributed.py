"""Run ensemble tasks on Ray: the one module of spikeforge that imports Ray.

Everything it schedules is a plain, importable function (sub-model training, network evaluation;
see :mod:`spikeforge.run.ensemble`); sharding, merging and compression never touch Ray.

- :func:`ray_session`: use a running Ray, else start a local one (``num_cpus = workers``, all
  cores when 0; no dashboard) or connect to a cluster at ``address``; shut down only what it
  started.
- :func:`run_tasks`: one Ray task per job, each using one CPU, retried up to ``max_retries``
  times when its worker process dies (a crash, an OOM kill, a lost node); a Python exception
  inside a task is not retried (it would happen again). Progress of every task is drawn as a tqdm
  bar from the task's progress file. If a task fails for good, the others are cancelled and
  :class:`spikeforge.ensemble.EnsembleError` says which task failed and why, in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spikeforge.ensemble.tasks import EnsembleError, read_progress

try:
    import ray
    import ray.exceptions
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "method 'ensemble' needs Ray: pip install 'spikeforge[distributed]' (ray==2.60.0)"
    ) from err

__all__ = ["Job", "ray_session", "run_tasks"]


@dataclass(frozen=True)
class Job:
    """One task: ``function(*args)`` run on a worker, shown as ``name``.

    ``progress`` is the file the function's :class:`~spikeforge.ensemble.ProgressWriter` writes
    (None: no bar).
    """

    name: str
    function: Callable[..., Any]
    args: tuple
    progress: Path | None = None


@contextmanager
def ray_session(workers: int = 0, address: str = "") -> Iterator[None]:
    """A Ray to submit to: the running one, a cluster at ``address``, or a new local one."""
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    else:
        ray.init(
            num_cpus=workers or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
    try:
        yield
    finally:
        ray.shutdown()


def _failure(job: Job, err: Exception, max_retries: int) -> EnsembleError:
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        detail = str(cause).strip().splitlines()
        reason = f"{type(cause).__name__}: {detail[0] if detail else ''}"
    else:
        reason = (
            f"its worker died {max_retries + 1} times (max_retries = {max_retries}; "
            f"{type(err).__name__})"
        )
    return EnsembleError(
        f"{job.name} failed: {reason}; no smaller ensemble is built. Completed work and "
        "checkpoints are kept: fix the cause and rerun with --resume"
    )


def _refresh(bars: list[tqdm | None], jobs: Sequence[Job]) -> None:
    for bar, job in zip(bars, jobs, strict=True):
        if bar is None or job.progress is None:
            continue
        record = read_progress(job.progress)
        if record is not None:
            bar.total = record["total"]
            bar.n = record["done"]
            bar.refresh()


def run_tasks(
    jobs: Sequence[Job],
    *,
    max_retries: int = 3,
    show_progress: bool = True,
    poll_seconds: float = 0.5,
) -> list[Any]:
    """Run every job as a Ray task (inside :func:`ray_session`); return results in job order.

    Raises:
        EnsembleError: a job raised, or its worker died more than ``max_retries`` times.
    """
    if not ray.is_initialized():
        raise RuntimeError("run_tasks needs a Ray session; call it inside ray_session()")
    refs = {
        ray.remote(num_cpus=1, max_retries=max_retries)(job.function).remote(*job.args): index
        for index, job in enumerate(jobs)
    }
    bars = [
        tqdm(desc=job.name, position=i, leave=False, unit="img")
        if show_progress and job.progress
        else None
        for i, job in enumerate(jobs)
    ]
    results: list[Any] = [None] * len(jobs)
    pending = dict(refs)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_seconds)
            for ref in ready:
                index = pending.pop(ref)
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayError as err:
                    raise _failure(jobs[index], err, max_retries) from None
            _refresh(bars, jobs)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        for bar in bars:
            if bar is not None:
                bar.close()
    return results
