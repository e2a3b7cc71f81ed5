"""AdamW parameter groups and the cosine learning-rate schedule with linear warm-up."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

# The projections that output log sigma^2: they start far from their trained values
# (init_unc_bias) and get their own LR multiplier (unc_lr_scale).
UNCERTAINTY_PARAMETERS = ("uncertainty_proj", "text_uncertainty_projection")


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Three AdamW groups: decayed weights, undecayed gains/biases/embeddings, uncertainty heads.

    As open_clip (and the official recipe): 1-d parameters, norms and biases get no weight decay.
    """
    config = config.resolved()  # official lr / weight decay where the recipe leaves them None
    decay, no_decay, uncertainty = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if any(part in name for part in UNCERTAINTY_PARAMETERS):
            uncertainty.append(parameter)
        elif parameter.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.lr},
        {"params": uncertainty, "weight_decay": 0.0, "lr": config.lr * config.unc_lr_scale},
    ]
    for group in groups:
        group["initial_lr"] = group["lr"]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    groups = parameter_groups(model, config)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=(config.beta1, config.beta2), eps=config.eps)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based): linear warm-up, then cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
