"""The ProLIP dual encoder: two transformer towers that each output a diagonal Gaussian.

Written to match the official implementation (naver-ai/prolip, itself derived from
open_clip) parameter-for-parameter, so the released ``model.safetensors`` load with
``strict=True``. Details that matter for parity, and are easy to get wrong:

* vision: tokens are ``[CLS, UNC, patches...]``; ``ln_post`` runs over every token and
  then *again* over the pooled [CLS] vector; [UNC] gets ``ln_post`` once and then the
  ``uncertainty_proj`` linear layer.
* text: tokens are ``[text..., UNC, CLS]`` (appended, not prepended), with position
  embeddings for ``len(text) + 2`` positions; no attention mask at all, padding is
  attended; only the [CLS] output goes through ``ln_final``; and the uncertainty
  projection reads the *projected mean*, not the [UNC] output (so text towers need
  ``width == embed_dim``, as every released one has).

Module names (``visual.transformer.resblocks.N.attn.in_proj_weight`` ...) follow the
official state dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, TextConfig, VisionConfig
from .gaussian import PairLogit


@dataclass
class GaussianEmbedding:
    """A batch of diagonal Gaussians: ``mean`` is L2-normalised [B, D], ``logvar`` is log sigma^2 [B, D].

    ``logvar`` is None for a deterministic model (CLIP): a point, i.e. zero variance.
    """

    mean: torch.Tensor
    logvar: torch.Tensor | None

    @property
    def uncertainty(self) -> torch.Tensor:
        """Sum of variances per input [B]: the scalar the paper reports as uncertainty (0 for points)."""
        if self.logvar is None:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return self.logvar.float().exp().sum(dim=-1)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as open_clip's LayerNormFp32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI CLIP (and ViT-H-14 ProLIP) were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names, batch-first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3W)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, L, W/H)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, W/H)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: Callable[[], nn.Module],
                 norm: Callable[[int], nn.Module], ls_init_value: float | None):
        super().__init__()
        self.ln_1 = norm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = norm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", act()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), causal))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class LayerScale(nn.Module):
    def __init__(self, width: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float,
                 act: Callable[[], nn.Module], norm: Callable[[int], nn.Module],
                 ls_init_value: float | None = None):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            ResidualBlock(width, heads, mlp_ratio, act, norm, ls_init_value) for _ in range(layers)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False, start: int = 0, stop: int | None = None
                ) -> torch.Tensor:  # (B, L, W) -> (B, L, W)
        """Run blocks ``start:stop`` (all by default); ``causal`` masks attention to earlier tokens."""
        for block in self.resblocks[start:stop]:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal)
        return x


def _norm(kwargs: dict) -> Callable[[int], nn.Module]:
    return partial(LayerNorm, **kwargs) if kwargs else LayerNorm


class VisionTower(nn.Module):
    """ViT whose [CLS] output is the mean and whose [UNC] output is log sigma^2."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, act: Callable[[], nn.Module]):
        super().__init__()
        if not cfg.embed_unc:
            raise ValueError("ProLIP vision towers need embed_unc=true")
        if cfg.pool_type != "tok":
            raise ValueError(f"vision pool_type {cfg.pool_type!r} is not supported by ProLIP")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        norm = _norm(cfg.norm_kwargs)
        scale = cfg.width ** -0.5
        self.image_size = cfg.image_size
        self.num_patches = cfg.grid_size ** 2
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.unc_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.num_patches + 2, cfg.width))
        self.ln_pre = nn.Identity() if cfg.no_ln_pre else norm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, act, norm, cfg.ls_init_value)
        self.ln_post = norm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))
        self.uncertainty_proj = nn.Linear(cfg.width, embed_dim)
        nn.init.normal_(self.uncertainty_proj.weight, std=scale)
        nn.init.constant_(self.uncertainty_proj.bias, cfg.init_unc_bias)

    def forward(self, pixels: torch.Tensor, keep_patches: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, 3, S, S) -> (mean (B, D) un-normalised, logvar (B, D)).

        ``keep_patches`` (sorted patch indices) drops the other patches, as the masked
        forward of the inclusion loss does.
        """
        x = self.conv1(pixels.to(self.conv1.weight.dtype))  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
        positions = self.positional_embedding
        if keep_patches is not None:
            x = x.index_select(1, keep_patches)
            special = torch.arange(2, device=keep_patches.device)
            positions = positions.index_select(0, torch.cat([special, keep_patches + 2]))
        batch = x.shape[0]
        special_tokens = torch.stack([self.class_embedding, self.unc_embedding]).to(x.dtype)  # (2, W)
        x = torch.cat([special_tokens.expand(batch, -1, -1), x], dim=1)  # (B, 2 + g*g, W)
        x = self.ln_pre(x + positions.to(x.dtype))
        x = self.ln_post(self.transformer(x))
        mean = self.ln_post(x[:, 0]) @ self.proj  # official: ln_post applied a second time to [CLS]
        logvar = self.uncertainty_proj(x[:, 1])
        return mean, logvar


class TextTower(nn.Module):
    """Text transformer with [UNC] and [CLS] appended after the tokens."""

    def __init__(self, cfg: TextConfig, embed_dim: int, act: Callable[[], nn.Module]):
        super().__init__()
        if not (cfg.embed_cls and cfg.embed_unc):
            raise ValueError("ProLIP text towers need embed_cls=true and embed_unc=true")
        if not cfg.no_causal_mask:
            raise ValueError("ProLIP text towers use no causal mask (no_causal_mask=true)")
        if not cfg.proj_bias:
            raise ValueError("proj_bias=false text towers are not supported")
        if cfg.width != embed_dim:
            # The uncertainty projection reads the projected mean, a (embed_dim,) vector,
            # through a Linear(width, embed_dim): it only type-checks when they agree.
            raise ValueError(f"text width {cfg.width} must equal embed_dim {embed_dim}")
        norm = _norm(cfg.norm_kwargs)
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.pad_id = cfg.pad_id
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.cls_emb = nn.Parameter(0.01 * torch.randn(cfg.width))
        self.unc_emb = nn.Parameter(0.01 * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length + 2, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, act, norm, cfg.ls_init_value)
        self.ln_final = norm(cfg.width)
        self.text_projection = nn.Linear(cfg.width, embed_dim)
        self.text_uncertainty_projection = nn.Linear(cfg.width, embed_dim)
        self._init_parameters(cfg)

    def _init_parameters(self, cfg: TextConfig) -> None:
        # The official init (open_clip's text tower), so training from scratch starts alike.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        attn_std = cfg.width ** -0.5
        proj_std = attn_std * (2 * cfg.layers) ** -0.5
        fc_std = (2 * cfg.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection.weight, std=attn_std)
        nn.init.zeros_(self.text_projection.bias)
        nn.init.normal_(self.text_uncertainty_projection.weight, std=attn_std)
        nn.init.constant_(self.text_uncertainty_projection.bias, cfg.init_unc_bias)

    def forward(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, L<=context) -> (mean (B, D) un-normalised, logvar (B, D)).

        ``token_mask`` (B, L, bool) replaces the masked tokens by the config's ``pad_id``
        (the demo evaluation's masked captions; the trainer replaces tokens itself, with
        the official ``replace_token``).
        """
        if input_ids.shape[1] > self.context_length:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed the context length {self.context_length}")
        if token_mask is not None:
            input_ids = input_ids.masked_fill(token_mask, self.pad_id)
        x = self.token_embedding(input_ids)  # (B, L, W)
        batch, length = input_ids.shape
        special_tokens = torch.stack([self.unc_emb, self.cls_emb]).to(x.dtype)  # (2, W): [UNC], [CLS]
        x = torch.cat([x, special_tokens.expand(batch, -1, -1)], dim=1)  # (B, L + 2, W)
        x = self.transformer(x + self.positional_embedding[: length + 2].to(x.dtype))
        mean = self.text_projection(self.ln_final(x[:, -1]))
        logvar = self.text_uncertainty_projection(mean)  # official: reads the projected mean
        return mean, logvar


class ConfiguredModel:
    """What every family's model reads off its config (see models.families): ``embed_dim``,
    the input ``image_size`` and the text ``context_length``."""

    config: ModelConfig  # or a family's own config with the same three fields

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.vision_cfg.image_size

    @property
    def context_length(self) -> int:
        return self.config.text_cfg.context_length


class ProLIP(ConfiguredModel, nn.Module):
    """The dual encoder. ``encode_image`` / ``encode_text`` return normalised Gaussians."""

    family = "prolip"
    deterministic = False  # its towers output variances

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        act = QuickGELU if config.quick_gelu else nn.GELU
        self.visual = VisionTower(config.vision_cfg, config.embed_dim, act)
        self.text = TextTower(config.text_cfg, config.embed_dim, act)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        bias = config.init_logit_bias if config.init_logit_bias is not None else 0.0
        self.logit_bias = nn.Parameter(torch.tensor(float(bias)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.transformer.grad_checkpointing = enable
        self.text.transformer.grad_checkpointing = enable

    def encode_image(self, pixel_values: torch.Tensor, keep_patches: torch.Tensor | None = None
                     ) -> GaussianEmbedding:
        mean, logvar = self.visual(pixel_values, keep_patches)
        return GaussianEmbedding(F.normalize(mean.float(), dim=-1), logvar.float())

    def encode_text(self, input_ids: torch.Tensor, token_mask: torch.Tensor | None = None) -> GaussianEmbedding:
        mean, logvar = self.text(input_ids, token_mask)
        return GaussianEmbedding(F.normalize(mean.float(), dim=-1), logvar.float())

    def pair_logit(self) -> PairLogit:
        """The match logit PPCL trains, from this model's own scale and bias."""
        return PairLogit.ppcl(float(self.logit_scale.detach().float().exp()), float(self.logit_bias.detach().float()))

    def match_logits(self, image: GaussianEmbedding, text: GaussianEmbedding) -> torch.Tensor:
        """[B_img, B_txt] logits that PPCL trains: scale * (mu_i.mu_t - (S_i + S_t)/2) + bias."""
        from .gaussian import match_logits

        return match_logits(image.mean, image.logvar, text.mean, text.logvar,
                            self.logit_scale.exp(), self.logit_bias)
