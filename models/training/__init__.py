"""ProLIP training, beside the inference library (as open_clip_train sits beside open_clip).

``train(TrainConfig)`` runs single-process or under torchrun (DDP); ``prolip-retrieval
train`` drives it from the command line. Data come from CSV/JSONL manifests or tar shards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import TrainConfig

if TYPE_CHECKING:
    from .trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    # the trainer (and torch with it) loads on first use, so `prolip-retrieval --help` stays quick
    if name in ("TrainResult", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
