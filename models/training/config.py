"""Every knob of a training run in one typed place, readable from a JSON recipe.

Loss hyper-parameters keep the official names (ppcl_lambda, inclusion_alpha, ...), as do
the masking ones (drop_ratio: share of the batch that also gets a masked forward;
drop_prob: share of caption tokens replaced in it; and, as the official code passes the
same number as ``image_mask_ratio``, the share of image patches KEPT in it).

Defaults are the official recipe's (naver-ai/prolip: the command-line defaults in
``src/prolip_train/params.py`` and the values its training scripts pass,
``scripts/prolip_datacomp_*_32h100.sh``; LongProLIP: ``scripts/longprolip_32h100.sh``),
each with its source line below. Fields left ``None`` depend on the model: ``resolved``
fills them for the model being trained (LongProLIP, the 256-token SigLIP text tower, has
its own values) and the run records the resolved values in its ``train_config.json``.

Deviations from the official recipe, on purpose: the schedule length (``steps``,
``warmup_steps`` 100 here vs 10000 there, ``params.py`` l. 146) is per run, not the
12.8B-sample pre-training's; ``masked_count`` masks at least one pair of a batch (the
official ``int(B * drop_ratio)`` may give none); the special tokens of the caption
(padding, EOS, SOT/EOT) are never replaced: the official line ``padding_mask = texts != 1``
(``train.py`` l. 107) protects exactly those for SigLIP ids, where pad = EOS = 1, and would
replace CLIP's start/end tokens and padding; the inclusion and VIB terms are computed once
per process (see models/loss.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "amp_bf16", "amp_fp16")

# The model-dependent official values (fields left None in TrainConfig).
OFFICIAL_PROLIP = {
    "lr": 5e-4,  # params.py l. 14: get_default_params("ViT-...") when --lr is not given (the datacomp scripts)
    "weight_decay": 0.2,  # params.py l. 144: --wd default (the datacomp scripts pass none)
    "inclusion_loss_eps": -20.0,  # params.py l. 515: --inclusion-eps default (the datacomp scripts pass none)
    "inclusion_loss_scale": 1000.0,  # params.py l. 521: --inclusion-scale default
}
OFFICIAL_LONGPROLIP = {  # scripts/longprolip_32h100.sh (fine-tuning ProLIP to 256 tokens)
    "lr": 1e-6,  # --lr "1e-6"
    "weight_decay": 0.01,  # --wd 0.01
    "inclusion_loss_eps": -100.0,  # --inclusion-eps -100
    "inclusion_loss_scale": 10.0,  # --inclusion-scale 10
}
LONGPROLIP_CONTEXT = 256
# Fields whose None default means "the official value for the model being trained" (TrainConfig.resolved).
MODEL_DEPENDENT = (*OFFICIAL_PROLIP, "image_keep_ratio", "replace_token")


class ConfigError(ValueError):
    """A bad training setting. The message names fields as ``{field}``: ``str()`` gives the field names
    (as a recipe says them), ``flags()`` the command-line flags (as `train` takes them)."""

    def __init__(self, template: str):
        super().__init__(template)
        self.template = template

    def __str__(self) -> str:
        return _render(self.template, lambda name: name)

    def flags(self) -> str:
        return _render(self.template, lambda name: "--" + name.replace("_", "-"))


def _render(template: str, name: Callable[[str], str]) -> str:
    import re

    return re.sub(r"\{(\w+)\}", lambda match: name(match.group(1)), template)


# What each setting means, for `train --help` (and anyone reading a recipe)
HELP = {
    "data": "manifests (.jsonl/.csv with image and caption columns), .tar WebDataset shards, shard patterns "
            "(train-{000..099}.tar, shards/*.tar) or folders of shards",
    "output_dir": "where checkpoints/, metrics.jsonl and the final model/ are written",
    "model_config": "a model configuration (a released config.json); one of --model-config, --arch, --init-from",
    "arch": "a shipped architecture name, randomly initialised; one of --model-config, --arch, --init-from",
    "init_from": "fine-tune: any source models.load_model reads (folder, hf-hub:<repo>); one of --model-config, "
                 "--arch, --init-from",
    "family": "model family, prolip, pcmepp or clip (default: --init-from's, detected from its config; ProLIP "
              "for --model-config and --arch)",
    "tokenizer": "a tokenizer.json, a folder holding one, or clip-bpe (default: the model's own)",
    "steps": "optimizer steps in the whole run",
    "batch_size": "(image, caption) pairs per process per optimizer step",
    "accum_steps": "micro-batches per step (must divide --batch-size); the loss is that of the whole batch",
    "lr": "peak learning rate (AdamW), reached after --warmup-steps (default: the model's official one)",
    "unc_lr_scale": "learning-rate multiplier for the uncertainty (log sigma^2) projections",
    "weight_decay": "AdamW weight decay, not applied to biases, norms, logit scale and bias (default: official)",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "eps": "AdamW epsilon",
    "warmup_steps": "steps of linear warm-up from 0 to --lr (keep it below --steps)",
    "min_lr_ratio": "floor of the cosine decay, as a fraction of --lr",
    "grad_clip_norm": "clip the gradient norm to this (default: no clipping)",
    "ppcl_lambda": "weight of the probabilistic pairwise contrastive loss (official name)",
    "inclusion_alpha": "weight of the image-in-text inclusion loss (official name)",
    "inclusion_alpha_occ": "weight of the original-in-masked inclusion loss (official name)",
    "vib_beta": "weight of the variational information bottleneck term (official name)",
    "inclusion_loss_eps": "shift of the inverse variances in the inclusion loss (official: -20; LongProLIP -100)",
    "inclusion_loss_scale": "scale of the inclusion loss sigmoid (official: 1000; LongProLIP 10)",
    "drop_ratio": "share of the batch that also gets a masked forward (occlusion inclusion)",
    "drop_prob": "share of caption tokens replaced in that masked forward (official 0.75)",
    "image_keep_ratio": "share of image patches KEPT in that masked forward (default --drop-prob, as the official "
                        "code passes it)",
    "replace_token": "token id written over replaced caption tokens (default: the tokenizer's official one, "
                     "SigLIP 32000, CLIP 286)",
    "inclusion_alpha_broader": "beyond the official loss: weight of 'a caption lies inside a broader caption' "
                               "(manifest field 'broader'); 0 = off",
    "inclusion_alpha_degraded": "beyond the official loss: weight of 'an image lies inside its degraded views'; "
                                "0 = off",
    "ordered_inclusion_scale": "sigmoid temperature of those two terms",
    "degraded_ratio": "share of the batch that gets a weak and a strong degraded view",
    "occluder_grey": "[darkest, lightest] grey of occluders in degraded views (default: the mean colour)",
    "precision": "auto (AMP on CUDA, fp32 on CPU), fp32, amp_bf16 or amp_fp16",
    "device": "auto, cpu, cuda, cuda:N",
    "threads": "torch intra-op threads on CPU (default: torch's choice)",
    "seed": "random seed (weights, data order, masks)",
    "log_every": "write metrics every this many steps",
    "save_every": "write a checkpoint every this many steps",
    "keep_checkpoints": "checkpoints kept (the oldest are deleted)",
    "stop_after": "stop (with a checkpoint) after this step; --resume continues",
}


@dataclass
class TrainConfig:
    # data: manifests (.jsonl / .csv, one (image, caption) per row) or tar shards / folders of them
    data: list[str] = field(default_factory=list)
    output_dir: str = "runs/prolip"
    # model: exactly one of model_config (inline ModelConfig dict), arch (shipped name), init_from
    model_config: dict[str, Any] | None = None
    arch: str | None = None
    init_from: str | None = None  # fine-tune: any source models.load_model reads
    # model family (prolip, pcmepp, clip): init_from's is detected from its config; an inline
    # model_config is ProLIP unless this says otherwise (models.families)
    family: str | None = None
    # a tokenizer.json, a folder holding one, or "clip-bpe"; default: the model's own (models/tokenizer.py)
    tokenizer: str | None = None
    # schedule
    steps: int = 1000  # optimizer steps
    batch_size: int = 128  # pairs per process per optimizer step
    accum_steps: int = 1  # micro-batches per step (batch_size must divide); same loss as one big batch
    lr: float | None = None  # None: official (5e-4; LongProLIP 1e-6), see OFFICIAL_PROLIP
    unc_lr_scale: float = 1.0  # LR multiplier for the uncertainty (log sigma^2) projections (not official: 1)
    weight_decay: float | None = None  # None: official (0.2; LongProLIP 0.01)
    beta1: float = 0.9  # scripts: --beta1 0.9
    beta2: float = 0.95  # scripts: --beta2 0.95
    eps: float = 1e-6  # params.py l. 14: get_default_params("ViT-...") Adam eps
    warmup_steps: int = 100  # official 10000 (params.py l. 146; LongProLIP 200): per run here
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the peak LR
    grad_clip_norm: float | None = None
    # loss (official names and meanings)
    ppcl_lambda: float = 1.0  # scripts: --ppcl-lambda 1.0 (params.py l. 485)
    inclusion_alpha: float = 1e-7  # scripts: --inclusion-alpha 0.0000001 (all three)
    inclusion_alpha_occ: float = 1e-3  # scripts: --inclusion-alpha-occ 0.001
    vib_beta: float = 1e-4  # scripts: --vib-beta 0.0001 (params.py l. 497)
    inclusion_loss_eps: float | None = None  # None: official (-20; LongProLIP -100)
    inclusion_loss_scale: float | None = None  # None: official (1000; LongProLIP 10)
    # masked inputs for the occlusion inclusion loss
    drop_ratio: float = 0.125  # scripts: --drop-ratio 0.125
    drop_prob: float = 0.75  # scripts: --drop-prob 0.75; share of caption tokens replaced (train.py l. 110)
    # share of image patches KEPT in the masked forward; None: drop_prob, as the official code passes it
    # (train.py l. 137 image_mask_ratio=args.drop_prob; transformer.py l. 401 keeps int(N * ratio) patches)
    image_keep_ratio: float | None = None
    # id written over replaced caption tokens; None: the tokenizer's official one (params.py l. 537-540
    # --replace-token: SigLIP 32000 = <extra_id_99>, CLIP 286 = "?</w>"), else its pad id
    replace_token: int | None = None
    # beyond the official recipe (models/loss.py), off by default: a caption lies in a broader
    # caption of its image (manifest field "broader"); an image lies in degraded views of it
    inclusion_alpha_broader: float = 0.0
    inclusion_alpha_degraded: float = 0.0
    ordered_inclusion_scale: float = 10.0  # their sigmoid temperature (softer than the official 1000)
    degraded_ratio: float = 0.125  # share of the batch that gets a weak and a strong degraded view
    # [darkest, lightest] intensity in [0, 1] of the neutral grey occluders in degraded views,
    # drawn per image; None: every occluder is the mean colour (how stage 3 of the demo was trained)
    occluder_grey: list[float] | None = None
    # machine
    precision: str = "auto"  # auto: AMP (bf16 where supported, else fp16) on CUDA, fp32 on CPU
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2
    stop_after: int | None = None  # stop (with a checkpoint) after this step; resume continues

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ValueError) for a value no run can use; fields named ``{field}``."""
        sources = [name for name in ("model_config", "arch", "init_from") if getattr(self, name)]
        if len(sources) != 1:
            given = ", ".join(f"{{{name}}}" for name in sources) or "none"
            raise ConfigError(f"give exactly one of {{model_config}}, {{arch}}, {{init_from}} (got {given})")
        if self.family is not None and self.family not in ("prolip", "pcmepp", "clip"):
            raise ConfigError(f"{{family}} must be prolip, pcmepp or clip, not {self.family!r}")
        positive = ("steps", "batch_size", "accum_steps", "log_every", "save_every", "keep_checkpoints")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{{{name}}} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.accum_steps:
            raise ConfigError(f"{{batch_size}} {self.batch_size} is not divisible by {{accum_steps}} "
                              f"{self.accum_steps}")
        if (self.lr is not None and self.lr <= 0) or self.unc_lr_scale <= 0:
            raise ConfigError("{lr} and {unc_lr_scale} must be positive")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError("{weight_decay} must be >= 0")
        if self.inclusion_loss_scale is not None and self.inclusion_loss_scale <= 0:
            raise ConfigError("{inclusion_loss_scale} must be positive")
        if self.image_keep_ratio is not None and not 0.0 < self.image_keep_ratio <= 1.0:
            raise ConfigError(f"{{image_keep_ratio}} must be in (0, 1], got {self.image_keep_ratio}")
        if self.replace_token is not None and self.replace_token < 0:
            raise ConfigError("{replace_token} must be a token id (>= 0)")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("{warmup_steps} must be >= 0 and {min_lr_ratio} in [0, 1]")
        if self.ordered_inclusion_scale <= 0 or self.inclusion_alpha_broader < 0 or self.inclusion_alpha_degraded < 0:
            raise ConfigError("{ordered_inclusion_scale} must be positive and {inclusion_alpha_broader} and "
                              "{inclusion_alpha_degraded} non-negative")
        for name in ("drop_ratio", "drop_prob", "degraded_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{{{name}}} must be in [0, 1), got {getattr(self, name)}")
        if self.occluder_grey is not None:
            if len(self.occluder_grey) != 2 or not 0.0 <= self.occluder_grey[0] <= self.occluder_grey[1] <= 1.0:
                raise ConfigError(f"{{occluder_grey}} must be [darkest, lightest] within [0, 1], got "
                                  f"{self.occluder_grey}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{{precision}} {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError("{stop_after} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("{threads} must be >= 1")

    def warnings(self) -> list[str]:
        """Settings that run but probably not as meant (the trainer logs them)."""
        found = []
        if self.warmup_steps >= self.steps:
            found.append(ConfigError(f"{{warmup_steps}} ({self.warmup_steps}) is not below {{steps}} ({self.steps}): "
                                     "the learning rate never reaches its peak {lr} in this run"))
        return [str(warning) for warning in found]

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.accum_steps

    def resolved(self, model_config=None, tokenizer=None) -> TrainConfig:
        """A copy with the model-dependent fields filled with their official values.

        model_config: the ModelConfig being trained (LongProLIP gets its own values; without
        one, ProLIP's). tokenizer: its Tokenizer (for replace_token; without one it stays None).
        """
        text_cfg = getattr(model_config, "text_cfg", None)
        long = (text_cfg is not None and text_cfg.context_length == LONGPROLIP_CONTEXT
                and bool(text_cfg.hf_tokenizer_name))
        official = OFFICIAL_LONGPROLIP if long else OFFICIAL_PROLIP
        changes: dict[str, Any] = {name: value for name, value in official.items() if getattr(self, name) is None}
        if self.image_keep_ratio is None:
            changes["image_keep_ratio"] = self.drop_prob
        if self.replace_token is None and tokenizer is not None:
            changes["replace_token"] = tokenizer.mask_id if tokenizer.mask_id is not None else tokenizer.pad_id
        return dataclasses.replace(self, **changes) if changes else self

    def loss_kwargs(self) -> dict[str, float]:
        names = ("ppcl_lambda", "inclusion_alpha", "inclusion_alpha_occ", "vib_beta", "inclusion_loss_eps",
                 "inclusion_loss_scale", "inclusion_alpha_broader", "inclusion_alpha_degraded",
                 "ordered_inclusion_scale")
        resolved = self.resolved()
        return {name: getattr(resolved, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"training config: unknown field(s) {unknown}")
        return cls(**raw)

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A JSON recipe; relative data/tokenizer paths stay relative to the working directory."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"training config {path}: invalid JSON ({error})") from None
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw)
