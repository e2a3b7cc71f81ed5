"""Masked inputs for the occlusion inclusion loss ("an input is included in its masked version").

As the official recipe (naver-ai/prolip ``src/prolip_train/train.py`` l. 104-115 and 137,
``src/prolip/transformer.py`` l. 398-404): the first ``drop_ratio`` share of the batch gets
a second forward in which

* the image keeps ``int(num_patches * image_keep_ratio)`` patches, one random subset for
  the whole masked batch (``encode_image(keep_patches=...)``); the official code passes
  ``drop_prob`` as that KEPT share (``image_mask_ratio``), so ``image_keep_ratio`` defaults to it;
* each caption token is replaced, with probability ``drop_prob``, by ``replace_token``
  (official ``--replace-token``: 32000 = ``<extra_id_99>`` for SigLIP ids). Special tokens
  (padding, EOS, CLIP's start/end) are never replaced: the official ``texts != 1`` protects
  exactly those for SigLIP ids, where pad = EOS = 1.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch


@dataclass
class Masks:
    count: int  # the first `count` pairs of the batch get a masked forward
    keep_patches: torch.Tensor  # sorted patch indices kept [K]
    token_mask: torch.Tensor  # [count, L] bool, True = replaced by ``replace_token``


def masked_count(batch_size: int, drop_ratio: float) -> int:
    """Pairs per batch with a masked forward (at least one when masking is on)."""
    return 0 if drop_ratio <= 0 else max(1, int(batch_size * drop_ratio))


def sample_masks(input_ids: torch.Tensor, num_patches: int, count: int, drop_prob: float, keep_ratio: float,
                 protected_ids: Collection[int], generator: torch.Generator) -> Masks:
    """Draw the patch subset and token masks for the first ``count`` rows of ``input_ids`` [B, L]."""
    kept = max(1, int(num_patches * keep_ratio))
    keep_patches = torch.randperm(num_patches, generator=generator)[:kept].sort().values  # (K,)
    ids = input_ids[:count]  # (count, L)
    maskable = ~torch.isin(ids, torch.tensor(sorted(protected_ids), dtype=ids.dtype))
    draws = torch.rand(ids.shape, generator=generator) < drop_prob
    return Masks(count, keep_patches, draws & maskable)


def masked_ids(input_ids: torch.Tensor, masks: Masks, replace_token: int) -> torch.Tensor:
    """The masked captions [count, L]: the drawn tokens replaced by ``replace_token``."""
    return input_ids[:masks.count].masked_fill(masks.token_mask.to(input_ids.device), replace_token)
