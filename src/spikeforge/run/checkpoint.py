"""Atomic checkpoints: ``checkpoint.safetensors`` (tensors + metadata) and ``checkpoint.json``.

The safetensors file is the source of truth: its metadata carries the same JSON as
``checkpoint.json`` (a readable copy). Each file is written to a temporary name in the run
directory, flushed to disk, then renamed over the old one, so a run killed at any moment leaves
either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "atomic_write_text",
    "load_checkpoint",
    "prepare_run_dir",
    "save_checkpoint",
]

WEIGHTS_NAME = "checkpoint.safetensors"
META_NAME = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; the message names the file and the fix."""


def prepare_run_dir(out: Path, resume: bool) -> Path:
    """Create the run directory ``out``; refuse to overwrite a run, or to resume nothing.

    Raises:
        ConfigError: one line naming the problem and the fix.
    """
    from spikeforge.run.config import ConfigError

    out = Path(out)
    has_checkpoint = (out / WEIGHTS_NAME).exists()
    if has_checkpoint and not resume:
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if resume and not has_checkpoint:
        raise ConfigError(f"nothing to resume in {out}: no {WEIGHTS_NAME}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Atomically write ``tensors`` and the JSON-serialisable ``meta`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta_text = json.dumps(meta, indent=1, sort_keys=True)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(contiguous, tmp, metadata={"spikeforge": meta_text})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, directory / WEIGHTS_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(directory / META_NAME, meta_text + "\n")


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(tensors, meta)``."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train first (spikeforge train CONFIG --out {directory})"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["spikeforge"])
        tensors = load_file(str(path))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({err}); delete the run directory and train again"
        ) from None
    return tensors, meta
