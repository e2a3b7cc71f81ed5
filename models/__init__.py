"""ProLIP inference library: configs, the dual encoders of every family, Gaussian math and model loading.

Families (``models.families``): ProLIP and PCME++ (Gaussian embeddings) and deterministic CLIP
(points: ``logvar`` None), all loaded by ``load_model`` with the family read from the config.

The names below load on first use (PEP 562), so ``import models.gaussian`` or the CLI's
``--help`` does not import torch (about 2.5 s) until something needs a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .architecture import GaussianEmbedding, ProLIP
    from .clip import CLIP
    from .config import ModelConfig, TextConfig, VisionConfig, architecture_config, list_architectures
    from .families import FAMILIES, detect_family
    from .loading import (
        ModelSourceError,
        default_model_source,
        load_config,
        load_model,
        model_family,
        model_id,
        save_model,
    )
    from .pcmepp import PCMEPP

_EXPORTS = {
    "GaussianEmbedding": ".architecture",
    "ProLIP": ".architecture",
    "CLIP": ".clip",
    "PCMEPP": ".pcmepp",
    "FAMILIES": ".families",
    "detect_family": ".families",
    "model_family": ".loading",
    "ModelConfig": ".config",
    "TextConfig": ".config",
    "VisionConfig": ".config",
    "architecture_config": ".config",
    "list_architectures": ".config",
    "ModelSourceError": ".loading",
    "default_model_source": ".loading",
    "load_config": ".loading",
    "load_model": ".loading",
    "model_id": ".loading",
    "save_model": ".loading",
}
__all__ = [  # the names of _EXPORTS, spelled out for linters and readers
    "CLIP",
    "FAMILIES",
    "PCMEPP",
    "GaussianEmbedding",
    "ModelConfig",
    "ModelSourceError",
    "ProLIP",
    "TextConfig",
    "VisionConfig",
    "architecture_config",
    "default_model_source",
    "detect_family",
    "list_architectures",
    "load_config",
    "load_model",
    "model_family",
    "model_id",
    "save_model",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
