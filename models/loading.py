"""Loading ProLIP checkpoints: a local folder in the released layout, or the Hugging Face hub.

The released layout is what ``huggingface_hub.PyTorchModelHubMixin`` writes:
``config.json`` (the model's init kwargs) and ``model.safetensors`` (its state dict).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .architecture import ProLIP
from .config import ModelConfig, architecture_config
from .device import select

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
ARCH_PREFIX = "arch:"  # random weights of a shipped architecture (benchmarks, tests)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DEMO_MODEL_DIR = Path(__file__).parent / "demo"


class ModelSourceError(ValueError):
    """The model source cannot be read; the message says what to do."""


def default_model_source() -> str:
    """The embedded model this project trains and ships (see models/demo/MODEL_CARD.md)."""
    return str(DEMO_MODEL_DIR)


def resolve_source(source: str | os.PathLike) -> Path:
    """Turn a model source into a local folder holding config.json and model.safetensors."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return _download_from_hub(text[len(HUB_PREFIX):])
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise ModelSourceError(
            f"model source {text!r} is neither a folder nor 'hf-hub:<repo id>' "
            f"(e.g. hf-hub:SanghyukChun/ProLIP-ViT-B-16-DC-1B-12_8B)")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelSourceError(f"model folder {folder} lacks {name} (expected the released layout)")
    return folder


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as error:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelSourceError("hf-hub sources need the huggingface_hub package") from error
    patterns = [CONFIG_FILE, WEIGHTS_FILE, "tokenizer*", "*.model", "special_tokens_map.json", "vocab*", "merges*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        raise ModelSourceError(
            f"cannot download {repo_id!r} from the Hugging Face hub and it is not in the local cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}). Either connect this machine, or "
            f"download it elsewhere (`huggingface-cli download {repo_id}`), copy the folder here and "
            f"pass its path as the model source.") from error
    except Exception as error:  # hub client errors: unknown repo, auth, HTTP
        raise ModelSourceError(f"downloading {repo_id!r} from the Hugging Face hub failed: {error}") from error


@functools.lru_cache(maxsize=16)
def _fingerprint(config_path: Path, weights_path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    for path in (config_path, weights_path):
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:12]


def model_id(source: str | os.PathLike | None = None) -> str:
    """A stable name for a model's weights: ``<name>@<sha256 prefix of config + weights>``.

    Collections record the model that embedded them and refuse queries from another one.
    Comparing paths would break when a data dir moves between installs (a clone elsewhere,
    a Docker volume); comparing content does not.
    """
    source = default_model_source() if source is None else source
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        return text  # random weights from a fixed seed: the name is the content
    folder = resolve_source(source)
    weights = folder / WEIGHTS_FILE
    stat = weights.stat()
    name = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else folder.name
    return f"{name}@{_fingerprint(folder / CONFIG_FILE, weights, stat.st_size, stat.st_mtime_ns)}"


def load_config(source: str | os.PathLike) -> ModelConfig:
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        return architecture_config(text[len(ARCH_PREFIX):])
    return ModelConfig.from_json(resolve_source(source) / CONFIG_FILE)


def load_model(source: str | os.PathLike | None = None, device: str | torch.device = "auto",
               dtype: str | torch.dtype | None = "auto") -> ProLIP:
    """Load a ProLIP model in eval mode.

    source: a folder in the released layout, ``hf-hub:<repo id>``, ``arch:<name>`` (random
    weights of a shipped architecture), or None for the embedded demo model.
    device: "auto" (CUDA when usable, else CPU; the choice and its reason are logged), or a
    torch device string. dtype: "auto" (fp32 on CPU, fp16 on CUDA), fp32, fp16 or bf16.
    """
    source = default_model_source() if source is None else source
    placement = select(device, dtype)
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        torch.manual_seed(0)
        model = ProLIP(architecture_config(text[len(ARCH_PREFIX):]))
        model.source_dir = None
    else:
        folder = resolve_source(source)
        model = ProLIP(ModelConfig.from_json(folder / CONFIG_FILE))
        state = load_file(folder / WEIGHTS_FILE)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelSourceError(
                f"{folder / WEIGHTS_FILE} does not match its config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}")
        model.source_dir = folder
    model.placement = placement
    return model.to(device=placement.device, dtype=placement.dtype).eval().requires_grad_(False)


def save_model(model: ProLIP, folder: str | os.PathLike) -> Path:
    """Write the released layout (config.json + model.safetensors) atomically per file."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_weights = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, tmp_weights)
    os.replace(tmp_weights, folder / WEIGHTS_FILE)
    tmp_config = folder / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_config, folder / CONFIG_FILE)
    return folder
