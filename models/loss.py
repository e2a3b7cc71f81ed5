"""The ProLIP training objective: PPCL + inclusion losses + VIB, with the official hyper-parameter names.

Terms (Chun et al., ICLR 2025, section 3; reductions as in the official ``src/prolip/loss.py``):

* PPCL, the probabilistic pairwise contrastive loss: a sigmoid loss on the match logits
  ``scale * (mu_i . mu_t - (S_i + S_t) / 2) + bias`` with +1 on matching pairs and -1
  elsewhere, summed over all image-text pairs and divided by the local batch size.
* inclusion, "image is included in its text": ``-logsigmoid(scale_inc * margin)`` where
  margin = test(1 in 2) - test(2 in 1), per dimension, averaged over pairs and dimensions.
* occlusion inclusion, "an input is included in its masked version", for both modalities
  (the masked forward covers the first ``n_masked`` pairs of the batch).
* VIB, a KL regulariser towards N(0, 1) written with log sigma = logvar / 2 and averaged over
  elements (the official code's form, which we reproduce exactly).

Two optional terms go beyond the official recipe, for data that knows more than pairs
(both off by default, so the default objective is the official one):

* broader inclusion, "a caption is included in a broader caption of the same image"
  (a caption hierarchy such as HierarCaps: "a red circle" in "a circle");
* degraded inclusion, "an image is included in a degraded view of it, which is included
  in a more degraded one" (blur, low contrast, occlusion of growing strength).

Both use the inclusion margin of the official loss with their own, softer temperature
(``ordered_inclusion_scale``): at the official scale of 1000 the sigmoid saturates once the
log-variances differ by ~0.01, which orders the variances without separating them, while a
hierarchy should move them by a visible amount.

With several processes the text features are all-gathered (with gradients) so every image
is contrasted with every text in the global batch; the per-process PPCL then equals the
official neighbour-exchange loss, and DDP's gradient averaging turns it into the loss of
one process holding the whole batch. (The official exchange loop also re-adds the
inclusion and VIB terms once per neighbour, pairing images with other processes' texts
for "image in text"; we compute those terms once, on the local pairs, so the objective
does not depend on the number of processes.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import GaussianEmbedding
from .gaussian import inclusion_test, match_logits

log = logging.getLogger(__name__)

# Guards of the official loss: a term that explodes is dropped for that step rather than
# derailing training (a lost step is cheaper than a diverged run).
VIB_EXPLOSION = 1e4
INCLUSION_EXPLOSION = 1e5


class ProLIPLoss(nn.Module):
    """PPCL + inclusion + VIB. ``forward`` returns the total loss, or a dict of terms.

    Hyper-parameters keep their official names so recipes carry over:
    ppcl_lambda (PPCL weight), inclusion_alpha (image in text), inclusion_alpha_occ
    (original in masked, both modalities), vib_beta (VIB weight), inclusion_loss_eps
    (shift of the inverse variances inside the inclusion test), inclusion_loss_scale
    (temperature of the inclusion sigmoid).
    """

    def __init__(self, ppcl_lambda: float = 1.0, inclusion_alpha: float = 0.0, inclusion_alpha_occ: float = 0.0,
                 vib_beta: float = 1e-5, inclusion_loss_eps: float = -10.0, inclusion_loss_scale: float = 1000.0,
                 inclusion_alpha_broader: float = 0.0, inclusion_alpha_degraded: float = 0.0,
                 ordered_inclusion_scale: float = 10.0, rank: int = 0, world_size: int = 1):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.ppcl_lambda = ppcl_lambda
        self.inclusion_alpha = inclusion_alpha
        self.inclusion_alpha_occ = inclusion_alpha_occ
        self.vib_beta = vib_beta
        self.inclusion_loss_eps = inclusion_loss_eps
        self.inclusion_loss_scale = inclusion_loss_scale
        self.inclusion_alpha_broader = inclusion_alpha_broader
        self.inclusion_alpha_degraded = inclusion_alpha_degraded
        self.ordered_inclusion_scale = ordered_inclusion_scale
        self.rank = rank
        self.world_size = world_size

    # -- logits -----------------------------------------------------------------------------
    def get_ground_truth(self, num_images: int, num_texts: int, device: torch.device, dtype: torch.dtype
                         ) -> torch.Tensor:
        """[N_img, N_txt] labels: +1 where local image i meets its own text, -1 elsewhere.

        The texts may be the global (gathered) batch; this rank's texts start at rank * N_img.
        """
        labels = -torch.ones(num_images, num_texts, device=device, dtype=dtype)
        offset = self.rank * num_images
        if offset + num_images > num_texts:
            raise ValueError(f"rank {self.rank}'s {num_images} images have no texts among {num_texts}")
        index = torch.arange(num_images, device=device)
        labels[index, index + offset] = 1.0
        return labels

    @staticmethod
    def get_logits(image: GaussianEmbedding, text: GaussianEmbedding, logit_scale: torch.Tensor,
                   logit_bias: torch.Tensor) -> torch.Tensor:
        """[N_img, N_txt] PPCL logits; ``logit_scale`` is the multiplier (already exponentiated)."""
        return match_logits(image.mean, image.logvar, text.mean, text.logvar, logit_scale, logit_bias)

    def inclusion_logits(self, inner: GaussianEmbedding, outer: GaussianEmbedding) -> torch.Tensor:
        """[N, D] per-dimension margin test(inner in outer) - test(outer in inner), row-paired."""
        eps = self.inclusion_loss_eps
        forward = inclusion_test(inner.mean, inner.logvar, outer.mean, outer.logvar, eps)
        backward = inclusion_test(outer.mean, outer.logvar, inner.mean, inner.logvar, eps)
        return forward - backward

    # -- reductions -------------------------------------------------------------------------
    def ppcl(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum of pairwise sigmoid losses over the local images' rows, divided by their count."""
        return -F.logsigmoid(labels * logits).sum() / logits.shape[0]

    def inclusion_loss(self, inner: GaussianEmbedding, outer: GaussianEmbedding, scale: float | None = None
                       ) -> torch.Tensor:
        """Mean over pairs and dimensions of -logsigmoid(scale * margin): "inner lies in outer"."""
        scale = self.inclusion_loss_scale if scale is None else scale
        loss = -F.logsigmoid(scale * self.inclusion_logits(inner, outer)).mean()
        if loss.detach().abs() > INCLUSION_EXPLOSION:
            log.warning("inclusion loss exploded (%.3g > %g); dropped for this step", loss.item(), INCLUSION_EXPLOSION)
            return loss * 0.0
        return loss

    @staticmethod
    def vib(embedding: GaussianEmbedding) -> torch.Tensor:
        """KL term towards N(0, 1) in the official form (log sigma = logvar / 2, mean over elements)."""
        log_sigma = embedding.logvar / 2
        kl = -0.5 * (1 + log_sigma - embedding.mean.pow(2) - log_sigma.exp()).mean()
        if kl.detach() > VIB_EXPLOSION:
            log.warning("VIB loss exploded (%.3g > %g); dropped for this step", kl.item(), VIB_EXPLOSION)
            return kl * 0.0
        return kl

    # -- the objective ----------------------------------------------------------------------
    def forward(self, image: GaussianEmbedding, text: GaussianEmbedding, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor, masked_image: GaussianEmbedding | None = None,
                masked_text: GaussianEmbedding | None = None, output_dict: bool = False,
                broader: tuple[GaussianEmbedding, GaussianEmbedding] | None = None,
                degraded: Sequence[GaussianEmbedding] | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        """image, text: the local batch's Gaussians [B, D] (row i of each is a pair).

        masked_image, masked_text: Gaussians [M, D] of masked versions of the first M pairs.
        broader: (captions [N, D], a broader caption of each [N, D]), row-paired.
        degraded: a chain of image views [K, D] each, from clean to most degraded; each view
        should lie in the next.
        Returns the summed loss, or with ``output_dict`` the weighted terms (ppcl, inclusion,
        img_inclusion, txt_inclusion, vib) whose sum is the loss.
        """
        if image.mean.shape != text.mean.shape:
            raise ValueError(f"image {tuple(image.mean.shape)} and text {tuple(text.mean.shape)} batches differ")
        if image.logvar is None and (masked_image is not None or broader is not None or degraded is not None
                                     or self.inclusion_alpha > 0 or self.vib_beta > 0):
            raise ValueError("deterministic embeddings (no logvar) take PPCL only: the inclusion and VIB terms "
                             "need variances")
        terms: dict[str, torch.Tensor] = {}
        all_text = gather_embedding(text, self.rank, self.world_size)  # [W * B, D]
        logits = self.get_logits(image, all_text, logit_scale, logit_bias)  # [B, W * B]
        labels = self.get_ground_truth(logits.shape[0], logits.shape[1], logits.device, logits.dtype)
        terms["ppcl"] = self.ppcl_lambda * self.ppcl(logits, labels)

        if (masked_image is None) != (masked_text is None):
            raise ValueError("masked_image and masked_text come together (one masked forward of both towers)")
        if masked_image is not None:
            count = masked_image.mean.shape[0]
            terms["img_inclusion"] = self.inclusion_alpha_occ * self.inclusion_loss(_head(image, count), masked_image)
            terms["txt_inclusion"] = self.inclusion_alpha_occ * self.inclusion_loss(_head(text, count), masked_text)
        if self.inclusion_alpha > 0:
            terms["inclusion"] = self.inclusion_alpha * self.inclusion_loss(image, text)
        # both terms are present whenever enabled (zero on a batch without such rows), so
        # every process and every step logs the same set of terms
        if self.inclusion_alpha_broader > 0:
            has_rows = broader is not None and broader[0].mean.shape[0] > 0
            loss = (self.inclusion_loss(broader[0], broader[1], self.ordered_inclusion_scale) if has_rows
                    else image.mean.sum() * 0.0)
            terms["broader_inclusion"] = self.inclusion_alpha_broader * loss
        if self.inclusion_alpha_degraded > 0:
            if degraded is not None and degraded[0].mean.shape[0] > 0:
                loss = torch.stack([self.inclusion_loss(inner, outer, self.ordered_inclusion_scale)
                                    for inner, outer in zip(degraded[:-1], degraded[1:], strict=True)]).mean()
            else:
                loss = image.mean.sum() * 0.0
            terms["degraded_inclusion"] = self.inclusion_alpha_degraded * loss
        if self.vib_beta > 0:
            terms["vib"] = self.vib_beta * (self.vib(image) + self.vib(text))
        return terms if output_dict else sum(terms.values())


def _head(embedding: GaussianEmbedding, count: int) -> GaussianEmbedding:
    return GaussianEmbedding(embedding.mean[:count], embedding.logvar[:count])


class _AllGather(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the summed gradient of its slice.

    torch.distributed.nn's version relies on reduce_scatter, which gloo lacks; an all_reduce
    of the full gradient followed by a slice works on every backend.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.world_size, ctx.rows = rank, world_size, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows], None, None


def gather_embedding(embedding: GaussianEmbedding, rank: int, world_size: int) -> GaussianEmbedding:
    """The global batch [W * B, D] in rank order, differentiable w.r.t. this rank's rows."""
    if world_size == 1:
        return embedding
    if not torch.distributed.is_initialized():
        raise RuntimeError(f"world_size={world_size} but torch.distributed is not initialised")
    logvar = None if embedding.logvar is None else _AllGather.apply(embedding.logvar, rank, world_size)
    return GaussianEmbedding(_AllGather.apply(embedding.mean, rank, world_size), logvar)
