"""ProLIP inference library: configs, the dual encoder, Gaussian math and model loading."""

from .architecture import GaussianEmbedding, ProLIP
from .config import ModelConfig, TextConfig, VisionConfig, architecture_config, list_architectures
from .loading import ModelSourceError, default_model_source, load_config, load_model, model_id, save_model

__all__ = [
    "GaussianEmbedding",
    "ModelConfig",
    "ModelSourceError",
    "ProLIP",
    "TextConfig",
    "VisionConfig",
    "architecture_config",
    "default_model_source",
    "list_architectures",
    "load_config",
    "load_model",
    "model_id",
    "save_model",
]
