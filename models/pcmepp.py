"""PCME++ (Chun, ICLR 2024): a CLIP whose towers fork into a mean branch and an uncertainty branch.

Written to match the official Hugging Face class (``HfPCMEPPModel``, naver-ai/pcmepp, folder
``hf_models/``) parameter-for-parameter, so the released checkpoints
(``SanghyukChun/PCMEPP-ViT-B-16-CC3M-12M-RedCaps`` and ``...-256M``) load with ``strict=True``:
``config.json`` holds the constructor's keyword arguments (``embed_dim``, ``vision_cfg``,
``text_cfg``, ``quick_gelu``, ``cast_dtype``, ``output_dict``) and ``model.safetensors`` the
state dict with the official names. Details that matter for parity:

* each tower runs its first ``layers - unc_layers`` blocks once; from there the mean branch
  runs the remaining main blocks and the uncertainty branch a separate ``uncertainty_transformer``
  of ``unc_layers`` blocks on the same intermediate tokens;
* image: mean = ``ln_post``([CLS]) @ ``proj``; log sigma^2 = [CLS] of the uncertainty branch
  @ ``uncertainty_proj``, with no layer norm;
* text: causal mask; both branches are read at the end-of-text token (``argmax`` of the ids);
  the mean branch goes through ``ln_final``, the uncertainty branch does not;
* the official outputs call log sigma^2 "std" (its loss uses ``exp(std)`` as the variance);
* matching: ``-negative_scale * CSD + shift`` with the checkpoint's own ``negative_scale`` and
  ``shift`` (``PairLogit.negative_csd``); ``logit_scale`` is kept for the layout but unused.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import ConfiguredModel, GaussianEmbedding, QuickGELU, Transformer, _norm
from .clip import CLIPVisionTower, pool_text
from .config import ViTGeometry, build_model_config
from .gaussian import PairLogit

# The official config dataclasses hold options for variants its towers never use with the
# released checkpoints; accepted only where they leave those variants off.
_VISION_OFF = {"timm_model_name": None, "timm_model_pretrained": False, "attentional_pool": False,
               "output_tokens": False, "input_patchnorm": False, "global_average_pool": False}
_VISION_INERT = ("timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path", "patch_dropout",
                 "n_queries", "attn_pooler_heads")
_TEXT_OFF = {"hf_model_name": None, "embed_cls": False, "output_tokens": False}
_TEXT_INERT = ("hf_model_pretrained", "proj", "pooler_type")
_MODEL_OFF = {"cast_dtype": None}
_MODEL_INERT = ("output_dict",)


@dataclass
class PCMEPPVisionConfig(ViTGeometry):
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    unc_layers: int = 2  # depth of the uncertainty branch (the last main blocks are its twins)
    head_width: int = 64
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None

    # what the shared ViT builder reads; PCME++ towers have them fixed
    no_ln_pre = False
    pool_type = "tok"
    norm_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class PCMEPPTextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    unc_layers: int = 2
    ls_init_value: float | None = None
    pad_id: int = 0
    hf_tokenizer_name: str | None = None

    mlp_ratio = 4.0  # the official text transformer always uses 4
    tokenizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class PCMEPPConfig:
    embed_dim: int
    vision_cfg: PCMEPPVisionConfig
    text_cfg: PCMEPPTextConfig
    quick_gelu: bool = False

    family = "pcmepp"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PCMEPPConfig:
        config = build_model_config(cls, raw, PCMEPPVisionConfig, PCMEPPTextConfig,
                                    off={"vision_cfg": _VISION_OFF, "text_cfg": _TEXT_OFF, "model": _MODEL_OFF},
                                    inert={"vision_cfg": _VISION_INERT, "text_cfg": _TEXT_INERT, "model": _MODEL_INERT})
        for where, tower in (("vision_cfg", config.vision_cfg), ("text_cfg", config.text_cfg)):
            if not 0 <= tower.unc_layers <= tower.layers:
                raise ValueError(f"{where}.unc_layers={tower.unc_layers} must lie in [0, layers={tower.layers}]")
        return config

    def to_dict(self) -> dict[str, Any]:
        """The official constructor's kwargs (what the released config.json holds)."""
        out = dataclasses.asdict(self)
        out["vision_cfg"].pop("norm_kwargs")
        out["text_cfg"].pop("tokenizer_kwargs")
        out.update(cast_dtype=None, output_dict=False)
        return out


class PCMEPPVisionTower(CLIPVisionTower):
    """The CLIP ViT plus an uncertainty branch forking off before its last ``unc_layers`` blocks."""

    def __init__(self, cfg: PCMEPPVisionConfig, embed_dim: int, act):
        super().__init__(cfg, embed_dim, act)
        norm = _norm(cfg.norm_kwargs)
        self.fork = cfg.layers - cfg.unc_layers
        self.uncertainty_transformer = Transformer(cfg.width, cfg.unc_layers, cfg.heads, cfg.mlp_ratio, act, norm,
                                                   cfg.ls_init_value)
        self.uncertainty_proj = nn.Parameter(cfg.width ** -0.5 * torch.randn(cfg.width, embed_dim))

    def forward(self, pixels: torch.Tensor, keep_patches: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, 3, S, S) -> (mean (B, D) un-normalised, logvar (B, D))."""
        shared = self.transformer(self.embed(pixels, keep_patches), stop=self.fork)  # (B, 1 + g*g, W)
        mean_tokens = self.transformer(shared, start=self.fork)
        unc_tokens = self.uncertainty_transformer(shared)
        return self.ln_post(mean_tokens[:, 0]) @ self.proj, unc_tokens[:, 0] @ self.uncertainty_proj


class PCMEPP(ConfiguredModel, nn.Module):
    """The official ``HfPCMEPPModel``'s inference path; ``encode_*`` return normalised Gaussians."""

    family = "pcmepp"
    deterministic = False

    def __init__(self, config: PCMEPPConfig):
        super().__init__()
        self.config = config
        text = config.text_cfg
        act = QuickGELU if config.quick_gelu else nn.GELU
        norm = _norm({})
        self.visual = PCMEPPVisionTower(config.vision_cfg, config.embed_dim, act)
        self.text_fork = text.layers - text.unc_layers
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(text.context_length, text.width))
        self.transformer = Transformer(text.width, text.layers, text.heads, text.mlp_ratio, act, norm,
                                       text.ls_init_value)
        self.uncertainty_transformer = Transformer(text.width, text.unc_layers, text.heads, text.mlp_ratio, act,
                                                   norm, text.ls_init_value)
        self.ln_final = norm(text.width)
        self.text_projection = nn.Parameter(text.width ** -0.5 * torch.randn(text.width, config.embed_dim))
        self.uncertainty_text_projection = nn.Parameter(text.width ** -0.5 * torch.randn(text.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.shift = nn.Parameter(torch.ones(1))
        self.negative_scale = nn.Parameter(torch.ones(1))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for transformer in (self.visual.transformer, self.visual.uncertainty_transformer, self.transformer,
                            self.uncertainty_transformer):
            transformer.grad_checkpointing = enable

    def pair_logit(self) -> PairLogit:
        """PCME++'s matching logit -negative_scale * CSD + shift, from this checkpoint's parameters."""
        return PairLogit.negative_csd(float(self.negative_scale.detach().float().reshape(())),
                                      float(self.shift.detach().float().reshape(())))

    def encode_image(self, pixel_values: torch.Tensor, keep_patches: torch.Tensor | None = None
                     ) -> GaussianEmbedding:
        mean, logvar = self.visual(pixel_values, keep_patches)
        return GaussianEmbedding(F.normalize(mean.float(), dim=-1), logvar.float())

    def encode_text(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None = None) -> GaussianEmbedding:
        """input_ids (B, L <= context) -> Gaussians; ``token_mask`` (B, L) replaces tokens by padding."""
        if input_ids.shape[1] > self.context_length:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed the context length {self.context_length}")
        ids = input_ids if token_mask is None else input_ids.masked_fill(token_mask, self.config.text_cfg.pad_id)
        x = self.token_embedding(ids)  # (B, L, W)
        x = x + self.positional_embedding[: ids.shape[1]].to(x.dtype)
        shared = self.transformer(x, causal=True, stop=self.text_fork)
        mean_tokens = self.ln_final(self.transformer(shared, causal=True, start=self.text_fork))
        unc_tokens = self.uncertainty_transformer(shared, causal=True)
        mean = pool_text(mean_tokens, input_ids, "argmax") @ self.text_projection
        logvar = pool_text(unc_tokens, input_ids, "argmax") @ self.uncertainty_text_projection
        return GaussianEmbedding(F.normalize(mean.float(), dim=-1), logvar.float())
