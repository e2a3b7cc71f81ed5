"""Deterministic CLIP (OpenAI / open_clip ViT layout): the same towers as ProLIP's ancestors, no variances.

Its ``encode_image`` / ``encode_text`` return ``GaussianEmbedding(mean, logvar=None)``: a point
per input. Everything downstream reads that None as "this model has no uncertainty" (CSD of two
points is ||mu1 - mu2||^2, ranking by it equals ranking by cosine; see ``models.gaussian``).

Written to match open_clip's ``CLIP`` class (``src/open_clip/model.py`` and ``transformer.py``)
parameter-for-parameter, so its checkpoints load with ``strict=True``: ``config.json`` holds the
constructor's keyword arguments (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``,
``init_logit_bias`` ...; open_clip's ``model_cfg``) and the state dict uses its names
(``visual.transformer.resblocks.N...``, ``token_embedding.weight``, ``text_projection`` ...).
OpenAI's original checkpoints use the same names. Details that matter for parity:

* vision: tokens are ``[CLS, patches...]``; ``ln_post`` then ``proj`` on [CLS] (``ln_post`` is
  per token, so open_clip's ``final_ln_after_pool`` gives the same result either way);
* text: a causal mask unless ``no_causal_mask``; ``ln_final`` on every token; pooled at the
  end-of-text token (``argmax`` of the ids: <|endoftext|> has the highest id in the CLIP
  vocabulary; or ``eos``: the first ``eos_id``), or the ``last`` / ``first`` position;
  projected by a ``[width, embed_dim]`` matrix, or a ``Linear`` with bias when ``proj_bias``.

Only the plain ViT + text-transformer CLIP is supported; configs asking for anything else
(timm or Hugging Face towers, attentional pooling, custom text towers) are refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import ConfiguredModel, GaussianEmbedding, QuickGELU, Transformer, _norm
from .config import ViTGeometry, build_model_config
from .gaussian import PairLogit

# Fields of open_clip's configs for variants this runtime does not implement; accepted only
# at the value that leaves them off. (patch_dropout is training-only and inert in eval.)
_CUSTOM_BLOCK = {"block_type": "default", "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                 "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}  # open_clip's "custom" blocks
_VISION_OFF = {"timm_model_name": None, "timm_model_pretrained": False, "attentional_pool": False,
               "output_tokens": False, "input_patchnorm": False, "global_average_pool": False,
               "pos_embed_type": "learnable", "act_kwargs": None, **_CUSTOM_BLOCK}
_VISION_INERT = ("timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path", "patch_dropout",
                 "attn_pooler_queries", "attn_pooler_heads", "n_queries")
_TEXT_OFF = {"hf_model_name": None, "embed_cls": False, "output_tokens": False, "proj_type": "linear",
             "act_kwargs": None, "ln_post_emb": False, "tokenizer_mode": None, **_CUSTOM_BLOCK}
_TEXT_INERT = ("hf_model_pretrained", "hf_proj_type", "hf_pooler_type", "final_ln_after_pool", "proj", "pooler_type")
_MODEL_OFF = {"cast_dtype": None, "nonscalar_logit_scale": False, "custom_text": False}
_MODEL_INERT = ("output_dict",)
TEXT_POOLS = ("argmax", "eos", "last", "first")


@dataclass
class CLIPVisionConfig(ViTGeometry):
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    no_ln_pre: bool = False
    final_ln_after_pool: bool = False  # same output either way (ln_post is per token); kept for the layout
    pool_type: str = "tok"  # [CLS]
    norm_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CLIPTextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    no_causal_mask: bool = False
    pad_id: int = 0
    pool_type: str = "argmax"  # argmax (the end-of-text id is the largest), eos (first eos_id), last, first
    eos_id: int = 2  # the end-of-text id pool_type "eos" looks for
    proj_bias: bool = False  # True: text_projection is a Linear with bias
    norm_kwargs: dict[str, Any] = field(default_factory=dict)
    hf_tokenizer_name: str | None = None
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CLIPConfig:
    embed_dim: int
    vision_cfg: CLIPVisionConfig
    text_cfg: CLIPTextConfig
    quick_gelu: bool = False
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None  # set: the model has a logit_bias (SigLIP-style training)

    family = "clip"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CLIPConfig:
        return build_model_config(cls, raw, CLIPVisionConfig, CLIPTextConfig,
                                  off={"vision_cfg": _VISION_OFF, "text_cfg": _TEXT_OFF, "model": _MODEL_OFF},
                                  inert={"vision_cfg": _VISION_INERT, "text_cfg": _TEXT_INERT, "model": _MODEL_INERT})

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


class CLIPVisionTower(nn.Module):
    """ViT whose [CLS] output, after ``ln_post`` and ``proj``, is the embedding."""

    def __init__(self, cfg: CLIPVisionConfig, embed_dim: int, act):
        super().__init__()
        if cfg.pool_type != "tok":
            raise ValueError(f"vision pool_type {cfg.pool_type!r} is not supported (only 'tok', the [CLS] token)")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        norm = _norm(cfg.norm_kwargs)
        scale = cfg.width ** -0.5
        self.image_size = cfg.image_size
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid_size ** 2 + 1, cfg.width))
        self.ln_pre = nn.Identity() if cfg.no_ln_pre else norm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, act, norm, cfg.ls_init_value)
        self.ln_post = norm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def embed(self, pixels: torch.Tensor, keep_patches: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (B, 3, S, S) -> tokens (B, 1 + patches, W) after ``ln_pre``, ready for the blocks.

        ``keep_patches`` (sorted patch indices) drops the other patches (a masked forward).
        """
        x = self.conv1(pixels.to(self.conv1.weight.dtype))  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
        positions = self.positional_embedding
        if keep_patches is not None:
            x = x.index_select(1, keep_patches)
            special = torch.zeros(1, dtype=keep_patches.dtype, device=keep_patches.device)
            positions = positions.index_select(0, torch.cat([special, keep_patches + 1]))
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, W)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + g*g, W)
        return self.ln_pre(x + positions.to(x.dtype))

    def forward(self, pixels: torch.Tensor, keep_patches: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (B, 3, S, S) -> un-normalised embedding (B, D)."""
        x = self.transformer(self.embed(pixels, keep_patches))
        return self.ln_post(x[:, 0]) @ self.proj


def pool_text(x: torch.Tensor, input_ids: torch.Tensor, pool_type: str, eos_id: int | None = None) -> torch.Tensor:
    """(B, L, W) token outputs -> (B, W): at the end-of-text token (the largest id, or the first
    ``eos_id``), or at the last or first position."""
    rows = torch.arange(x.shape[0], device=x.device)
    if pool_type == "argmax":
        return x[rows, input_ids.argmax(dim=-1)]
    if pool_type == "eos":
        return x[rows, (input_ids == eos_id).int().argmax(dim=-1)]
    if pool_type == "last":
        return x[:, -1]
    return x[:, 0]


class CLIP(ConfiguredModel, nn.Module):
    """open_clip's CLIP with a ViT image tower. ``encode_*`` return points (``logvar=None``)."""

    family = "clip"
    deterministic = True  # no variances: every uncertainty-based feature is unavailable

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        text = config.text_cfg
        if text.pool_type not in TEXT_POOLS:
            raise ValueError(f"text pool_type {text.pool_type!r} is not supported; use one of {', '.join(TEXT_POOLS)}")
        act = QuickGELU if config.quick_gelu else nn.GELU
        norm = _norm(text.norm_kwargs)
        self.visual = CLIPVisionTower(config.vision_cfg, config.embed_dim, act)
        # The text tower's parameters sit at the top level, as in open_clip's CLIP.
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.transformer = Transformer(text.width, text.layers, text.heads, text.mlp_ratio, act, norm,
                                       text.ls_init_value)
        self.ln_final = norm(text.width)
        if text.proj_bias:
            self.text_projection = nn.Linear(text.width, config.embed_dim)
        else:
            self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        if config.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(config.init_logit_bias)))
        else:
            self.logit_bias = None
        self._init_text()

    def _init_text(self) -> None:
        # open_clip's init of the text tower, so training from scratch starts alike
        width, layers = self.config.text_cfg.width, self.config.text_cfg.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std, proj_std, fc_std = width ** -0.5, width ** -0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        if isinstance(self.text_projection, nn.Linear):
            nn.init.normal_(self.text_projection.weight, std=attn_std)
            nn.init.zeros_(self.text_projection.bias)
        else:
            nn.init.normal_(self.text_projection, std=attn_std)

    # --- what every family offers (see models.families)
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.transformer.grad_checkpointing = enable
        self.transformer.grad_checkpointing = enable

    def pair_logit(self) -> PairLogit:
        """scale * mu1.mu2 + bias (bias 0 without a logit_bias): the SigLIP/PPCL logit of points."""
        bias = 0.0 if self.logit_bias is None else float(self.logit_bias.detach().float())
        return PairLogit.ppcl(float(self.logit_scale.detach().float().exp()), bias)

    def encode_image(self, pixel_values: torch.Tensor, keep_patches: torch.Tensor | None = None
                     ) -> GaussianEmbedding:
        return GaussianEmbedding(F.normalize(self.visual(pixel_values, keep_patches).float(), dim=-1), None)

    def encode_text(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None = None) -> GaussianEmbedding:
        return GaussianEmbedding(F.normalize(self.text_features(input_ids, token_mask).float(), dim=-1), None)

    # --- the text tower
    def text_tokens(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L <= context) -> embedded tokens (B, L, W) with positions."""
        if input_ids.shape[1] > self.context_length:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed the context length {self.context_length}")
        if token_mask is not None:
            input_ids = input_ids.masked_fill(token_mask, self.config.text_cfg.pad_id)
        x = self.token_embedding(input_ids)  # (B, L, W)
        return x + self.positional_embedding[: input_ids.shape[1]].to(x.dtype)

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection

    def text_features(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L) -> un-normalised embedding (B, D)."""
        text = self.config.text_cfg
        x = self.transformer(self.text_tokens(input_ids, token_mask), causal=not text.no_causal_mask)
        return self.project_text(pool_text(self.ln_final(x), input_ids, text.pool_type, text.eos_id))
