"""Architecture configuration: the init kwargs of a released ProLIP checkpoint, typed.

A released checkpoint folder holds ``config.json`` with exactly these fields (the kwargs
of the official ``ProLIP.__init__``), so the same dataclasses read our shipped
architectures, the reference fixtures and the hub checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHITECTURES_DIR = Path(__file__).parent / "architectures"

# Fields of the official configs that only matter for training-time variants this
# runtime does not implement; accepted when they hold their harmless default.
_IGNORED_IF_DEFAULT = {
    "timm_model_name": None,
    "timm_model_pretrained": False,
    "hf_model_name": None,
    "attentional_pool": False,
    "output_tokens": False,
}


class ViTGeometry:
    """What a ViT tower's config derives from its fields (every family's vision config has them)."""

    width: int
    head_width: int
    image_size: int
    patch_size: int

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class VisionConfig(ViTGeometry):
    image_size: int = 224  # square input side in pixels
    patch_size: int = 16  # side of the square patches cut by the stem convolution
    width: int = 768  # transformer width
    layers: int = 12
    head_width: int = 64  # per-head width; heads = width // head_width
    mlp_ratio: float = 4.0
    embed_unc: bool = True  # append the [UNC] token whose output becomes log sigma^2
    init_unc_bias: float = -10.0  # initial bias of the uncertainty projection
    no_ln_pre: bool = False
    pool_type: str = "tok"  # ProLIP reads [CLS] (token 0) and [UNC] (token 1)
    ls_init_value: float | None = None  # layer scale; None disables it
    norm_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"eps": 1e-6}


@dataclass
class TextConfig:
    context_length: int = 64  # text tokens, not counting the appended [UNC] and [CLS]
    vocab_size: int = 32100
    width: int = 768
    heads: int = 12
    layers: int = 12
    mlp_ratio: float = 4.0
    embed_cls: bool = True
    embed_unc: bool = True
    no_causal_mask: bool = True  # ProLIP attends over every token, padding included
    pad_id: int = 0
    pool_type: str = "last"
    proj_bias: bool = True
    init_unc_bias: float = -10.0
    ls_init_value: float | None = None
    norm_kwargs: dict[str, Any] = field(default_factory=dict)
    hf_tokenizer_name: str | None = None  # e.g. "timm/ViT-B-16-SigLIP"
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"clean": "canonicalize"}


@dataclass
class ModelConfig:
    embed_dim: int
    vision_cfg: VisionConfig
    text_cfg: TextConfig
    quick_gelu: bool = False  # x * sigmoid(1.702 x), as OpenAI-CLIP-initialised towers use
    init_logit_scale: float = 2.6592600369644043  # log(1 / 0.07)
    init_logit_bias: float | None = None

    family = "prolip"  # a class attribute, not a config field

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Build from the JSON layout of a released ``config.json``; unknown keys are errors."""
        return build_model_config(cls, raw, VisionConfig, TextConfig)

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_known(kind: type, raw: dict[str, Any], where: str, skip: set[str] = frozenset()) -> None:
    """Refuse keys that are not fields of the dataclass ``kind`` (a typo must not be ignored)."""
    known = {f.name for f in dataclasses.fields(kind)} - skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unsupported field(s) {unknown}")


def drop_switched_off(raw: dict[str, Any], off: dict[str, Any], inert: tuple[str, ...] = (), where: str = ""
                      ) -> dict[str, Any]:
    """``raw`` without the fields of variants this runtime does not implement.

    ``off`` maps such a field to the value that leaves the variant off: it is accepted at that
    value (or null / empty), refused otherwise. ``inert`` fields do nothing at inference
    (dropout, options of an unused variant) and are dropped whatever their value.
    """
    raw = dict(raw)
    for name, default in off.items():
        if name in raw:
            value = raw.pop(name)
            if value != default and value is not None and value not in ({}, []):
                raise ValueError(f"{where}.{name}={value!r} is not supported by this runtime")
    for name in inert:
        raw.pop(name, None)
    return raw


def build_section(kind: type, raw: dict[str, Any], where: str, off: dict[str, Any] | None = None,
                  inert: tuple[str, ...] = ()):
    """A tower config dataclass from its JSON section; see ``drop_switched_off`` for ``off`` / ``inert``."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object, not {type(raw).__name__}")
    raw = drop_switched_off(raw, _IGNORED_IF_DEFAULT if off is None else off, inert, where)
    check_known(kind, raw, where)
    for name in ("norm_kwargs", "tokenizer_kwargs"):
        if name in raw and raw[name] is None:
            raw[name] = {}
    return kind(**raw)


def list_architectures() -> list[str]:
    """Names of the shipped architecture configs (the released checkpoints' shapes)."""
    return sorted(p.stem for p in ARCHITECTURES_DIR.glob("*.json"))


def architecture_config(name: str) -> ModelConfig:
    path = ARCHITECTURES_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown architecture {name!r}; shipped: {', '.join(list_architectures())}")
    return ModelConfig.from_json(path)


def build_model_config(cls: type, raw: dict[str, Any], vision: type, text: type,
                       off: dict[str, dict[str, Any]] | None = None,
                       inert: dict[str, tuple[str, ...]] | None = None):
    """A family's model config ``cls`` from a released ``config.json`` layout.

    ``vision`` and ``text`` are its tower config classes; ``off`` and ``inert`` map "vision_cfg",
    "text_cfg" and "model" to what ``drop_switched_off`` drops. Unknown keys are errors.
    """
    off, inert, raw = off or {}, inert or {}, dict(raw)
    try:
        towers = {where: build_section(kind, raw.pop(where), where, off.get(where), inert.get(where, ()))
                  for where, kind in (("vision_cfg", vision), ("text_cfg", text))}
        embed_dim = int(raw.pop("embed_dim"))
    except KeyError as missing:
        raise ValueError(f"model config lacks required field {missing}") from None
    if "model" in off or "model" in inert:
        raw = drop_switched_off(raw, off.get("model", {}), inert.get("model", ()), "model config")
    check_known(cls, raw, "model config", skip={"embed_dim", "vision_cfg", "text_cfg"})
    return cls(embed_dim=embed_dim, **towers, **raw)
