"""Masked inputs for the occlusion inclusion loss ("an input is included in its masked version").

As the official recipe: the first ``drop_ratio`` share of the batch gets a second forward
in which ``drop_prob`` of the image patches are dropped (one random patch subset for the
whole masked batch, which ``encode_image(keep_patches=...)`` takes) and ``drop_prob`` of
each caption's tokens are replaced by padding. The last real token (EOS / end-of-text) is
never masked, so every masked caption still ends as captions do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Masks:
    count: int  # the first `count` pairs of the batch get a masked forward
    keep_patches: torch.Tensor  # sorted patch indices kept [K]
    token_mask: torch.Tensor  # [count, L] bool, True = replaced by padding


def masked_count(batch_size: int, drop_ratio: float) -> int:
    """Pairs per batch with a masked forward (at least one when masking is on)."""
    return 0 if drop_ratio <= 0 else max(1, int(batch_size * drop_ratio))


def sample_masks(input_ids: torch.Tensor, num_patches: int, count: int, drop_prob: float, pad_id: int,
                 generator: torch.Generator) -> Masks:
    """Draw the patch subset and token masks for the first ``count`` rows of ``input_ids`` [B, L]."""
    kept = max(1, round(num_patches * (1.0 - drop_prob)))
    keep_patches = torch.randperm(num_patches, generator=generator)[:kept].sort().values  # (K,)
    ids = input_ids[:count]  # (count, L)
    real = ids != pad_id
    # index of the last real token per row; rows of pure padding have none to protect
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    last_real = torch.where(real, positions, -1).max(dim=1, keepdim=True).values  # (count, 1)
    maskable = real & (positions != last_real)
    draws = torch.rand(ids.shape, generator=generator) < drop_prob
    return Masks(count, keep_patches, draws & maskable)
