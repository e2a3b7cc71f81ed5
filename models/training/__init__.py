"""ProLIP training, beside the inference library (as open_clip_train sits beside open_clip).

``train(TrainConfig)`` runs single-process or under torchrun (DDP); ``prolip-retrieval
train`` drives it from the command line. Data come from CSV/JSONL manifests or tar shards.
"""

from .config import TrainConfig
from .trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
