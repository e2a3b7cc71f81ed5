"""Every knob of a training run in one typed place, readable from a JSON recipe.

Loss hyper-parameters keep the official names (ppcl_lambda, inclusion_alpha, ...), as do
the masking ones (drop_ratio: share of the batch that also gets a masked forward;
drop_prob: share of tokens / patches dropped in it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "amp_bf16", "amp_fp16")


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
    tokenizer: str | None = None  # a tokenizer.json; default: the one next to init_from
    # schedule
    steps: int = 1000  # optimizer steps
    batch_size: int = 128  # pairs per process per optimizer step
    accum_steps: int = 1  # micro-batches per step (batch_size must divide); same loss as one big batch
    lr: float = 1e-3
    unc_lr_scale: float = 1.0  # LR multiplier for the uncertainty (log sigma^2) projections
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the peak LR
    grad_clip_norm: float | None = None
    # loss (official names and meanings)
    ppcl_lambda: float = 1.0
    inclusion_alpha: float = 1e-4
    inclusion_alpha_occ: float = 1e-3
    vib_beta: float = 1e-4
    inclusion_loss_eps: float = -10.0
    inclusion_loss_scale: float = 1000.0
    # masked inputs for the occlusion inclusion loss
    drop_ratio: float = 0.125
    drop_prob: float = 0.75
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
        sources = [name for name in ("model_config", "arch", "init_from") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one of model_config, arch, init_from (got {sources or 'none'})")
        if self.family is not None and self.family not in ("prolip", "pcmepp", "clip"):
            raise ValueError(f"family must be prolip, pcmepp or clip, not {self.family!r}")
        positive = ("steps", "batch_size", "accum_steps", "log_every", "save_every", "keep_checkpoints")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}")
        if self.lr <= 0 or self.unc_lr_scale <= 0:
            raise ValueError("lr and unc_lr_scale must be positive")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.ordered_inclusion_scale <= 0 or self.inclusion_alpha_broader < 0 or self.inclusion_alpha_degraded < 0:
            raise ValueError("ordered_inclusion_scale must be positive and the inclusion alphas non-negative")
        for name in ("drop_ratio", "drop_prob", "degraded_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.occluder_grey is not None:
            if len(self.occluder_grey) != 2 or not 0.0 <= self.occluder_grey[0] <= self.occluder_grey[1] <= 1.0:
                raise ValueError(f"occluder_grey must be [darkest, lightest] within [0, 1], got {self.occluder_grey}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError("stop_after must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.accum_steps

    def loss_kwargs(self) -> dict[str, float]:
        names = ("ppcl_lambda", "inclusion_alpha", "inclusion_alpha_occ", "vib_beta", "inclusion_loss_eps",
                 "inclusion_loss_scale", "inclusion_alpha_broader", "inclusion_alpha_degraded",
                 "ordered_inclusion_scale")
        return {name: getattr(self, name) for name in names}

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
