"""Training checkpoints that resume bit for bit, written atomically.

A checkpoint holds what the next step depends on: weights, optimizer moments, the AMP
scaler, the step, every process's data position and masking generator, and the global
RNG states. It is written to a temporary file, fsynced and renamed, and ``latest`` (a
one-line pointer) is replaced the same way, so a crash leaves the previous one intact.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

LATEST = "latest"


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``step-XXXXXXX.pt``, point ``latest`` at it, and prune all but the ``keep`` newest."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    _atomic_write(path, lambda handle: torch.save(state, handle))
    _atomic_write(folder / LATEST, lambda handle: handle.write(path.name.encode() + b"\n"))
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def find_checkpoint(resume: str | os.PathLike, folder: Path) -> Path | None:
    """``resume`` is a checkpoint file, or "auto" for ``folder``'s latest (None when there is none)."""
    if str(resume) != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return path
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text(encoding="utf-8").strip()
    if not path.is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is missing")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only=False: the state holds NumPy RNG state and Python tuples we wrote ourselves
    return torch.load(path, map_location="cpu", weights_only=False)
