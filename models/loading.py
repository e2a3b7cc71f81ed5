"""Loading checkpoints of any family (ProLIP, PCME++, CLIP): a local folder, or the Hugging Face hub.

The released layout is what ``huggingface_hub.PyTorchModelHubMixin`` writes:
``config.json`` (the model's init kwargs) and ``model.safetensors`` (its state dict).
open_clip's hub layout is read too: ``open_clip_config.json`` (whose ``model_cfg`` holds the
same kwargs) and ``open_clip_model.safetensors``. The family comes from the config
(``models.families.detect_family``) unless ``family=`` names it; weights load strictly.
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
from .config import architecture_config
from .device import select
from .families import build_model, check_family, config_from_dict

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
ARCH_PREFIX = "arch:"  # random weights of a shipped architecture (benchmarks, tests)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # {"model_cfg": <the kwargs>, "preprocess_cfg": {...}}
OPEN_CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"
# The image transform is fixed (models.preprocess): OpenAI CLIP's mean and std.
_OPENAI_MEAN, _OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
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
    checkpoint_files(folder)
    return folder


def checkpoint_files(folder: Path) -> tuple[Path, Path]:
    """(config file, weights file) of a model folder: the released layout, else open_clip's hub layout."""
    for config, weights in ((CONFIG_FILE, WEIGHTS_FILE), (OPEN_CLIP_CONFIG_FILE, OPEN_CLIP_WEIGHTS_FILE)):
        if (folder / config).is_file() and (folder / weights).is_file():
            return folder / config, folder / weights
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    raise ModelSourceError(f"model folder {folder} lacks {', '.join(missing)} (expected the released layout: "
                           f"{CONFIG_FILE} + {WEIGHTS_FILE}, or open_clip's {OPEN_CLIP_CONFIG_FILE} + "
                           f"{OPEN_CLIP_WEIGHTS_FILE})")


def read_config_dict(folder: Path) -> dict:
    """The model's constructor kwargs as a dict, from either layout (see ``checkpoint_files``)."""
    import json

    path = checkpoint_files(folder)[0]
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelSourceError(f"cannot read {path}: {error}") from None
    if path.name == OPEN_CLIP_CONFIG_FILE:
        if not isinstance(raw, dict) or not isinstance(raw.get("model_cfg"), dict):
            raise ModelSourceError(f"{path} has no model_cfg object")
        preprocess = raw.get("preprocess_cfg") or {}
        for key, expected in (("mean", _OPENAI_MEAN), ("std", _OPENAI_STD)):
            value = preprocess.get(key)
            if value is not None and any(abs(float(a) - b) > 1e-6 for a, b in zip(value, expected, strict=False)):
                raise ModelSourceError(f"{path}: preprocess_cfg.{key}={value} differs from the OpenAI CLIP "
                                       f"normalisation this runtime applies ({list(expected)})")
        raw = raw["model_cfg"]
    if not isinstance(raw, dict):
        raise ModelSourceError(f"{path} must hold a JSON object")
    return raw


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as error:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelSourceError("hf-hub sources need the huggingface_hub package") from error
    patterns = [CONFIG_FILE, WEIGHTS_FILE, OPEN_CLIP_CONFIG_FILE, OPEN_CLIP_WEIGHTS_FILE, "tokenizer*", "*.model",
                "special_tokens_map.json", "vocab*", "merges*"]
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
    config, weights = checkpoint_files(folder)
    stat = weights.stat()
    name = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else folder.name
    return f"{name}@{_fingerprint(config, weights, stat.st_size, stat.st_mtime_ns)}"


def load_config(source: str | os.PathLike, family: str | None = None):
    """The typed config of a model source (ProLIP ``ModelConfig``, ``PCMEPPConfig`` or ``CLIPConfig``).

    ``family`` overrides the detection rule of ``models.families``.
    """
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        return architecture_config(text[len(ARCH_PREFIX):])
    try:
        return config_from_dict(read_config_dict(resolve_source(source)), family)
    except ModelSourceError:
        raise
    except ValueError as error:
        raise ModelSourceError(f"model {text}: {error}") from None


def model_family(source: str | os.PathLike | None = None, family: str | None = None) -> str:
    """The family a source's checkpoint belongs to (reads its config only)."""
    return load_config(default_model_source() if source is None else source, family).family


def load_model(source: str | os.PathLike | None = None, device: str | torch.device = "auto",
               dtype: str | torch.dtype | None = "auto", family: str | None = None):
    """Load a model of any family in eval mode (``ProLIP``, ``PCMEPP`` or ``CLIP``).

    source: a folder in the released layout, ``hf-hub:<repo id>``, ``arch:<name>`` (random
    weights of a shipped ProLIP architecture), or None for the embedded demo model.
    device: "auto" (CUDA when usable, else CPU; the choice and its reason are logged), or a
    torch device string. dtype: "auto" (fp32 on CPU, fp16 on CUDA), fp32, fp16 or bf16.
    family: "prolip", "pcmepp" or "clip" to override the detection from the config.
    """
    source = default_model_source() if source is None else source
    check_family(family)
    placement = select(device, dtype)
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        if family not in (None, "prolip"):
            raise ModelSourceError(f"{text} is a ProLIP architecture, not family {family!r}")
        torch.manual_seed(0)
        model = ProLIP(architecture_config(text[len(ARCH_PREFIX):]))
        model.source_dir = None
    else:
        folder = resolve_source(source)
        model = build_model(load_config(folder, family))
        weights = checkpoint_files(folder)[1]
        state = load_file(weights)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelSourceError(
                f"{weights} does not match its config ({model.family}): missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}")
        model.source_dir = folder
    model.placement = placement
    return model.to(device=placement.device, dtype=placement.dtype).eval().requires_grad_(False)


def save_model(model, folder: str | os.PathLike) -> Path:
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
