"""Degraded views of training images, for the degraded-inclusion loss.

A blurred, faded or partly hidden image shows less, so it should be *more* uncertain, and
its Gaussian should contain the clean image's. The official recipe teaches "an input lies
in its masked version" with dropped patches; this extends it to degradations a camera
produces, at a known strength. For the first rows of a batch we draw one kind per image
and two strengths, weak < strong, and return both views: the loss then asks for
clean in weak in strong, which ties the variance to the strength, not just to "degraded".

Everything works on the preprocessed tensors (normalised per channel), on any device,
from a caller-owned ``torch.Generator``, so a resumed run draws the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

KINDS = ("blur", "low_contrast", "occlusion")
MAX_BLUR_SIGMA = 0.1  # Gaussian blur sigma at full strength, as a fraction of the image side
MIN_CONTRAST = 0.08  # contrast left at full strength
MAX_OCCLUDED_AREA = 0.45  # share of the image an occluder covers at full strength
WEAK_RANGE = (0.1, 0.6)  # the weak view's strength is uniform here
MIN_GAP = 0.3  # the strong view is at least this much stronger (as a share of the room left to 1)


@dataclass
class DegradedViews:
    count: int  # the first `count` images of the batch have views
    weak: torch.Tensor  # [count, 3, S, S]
    strong: torch.Tensor  # [count, 3, S, S]


def degrade(pixels: torch.Tensor, kinds: torch.Tensor, strengths: torch.Tensor, centres: torch.Tensor,
            fills: torch.Tensor | None = None) -> torch.Tensor:
    """Degrade each image [N, 3, S, S] by its kind (index into KINDS) at its strength in [0, 1].

    centres [N, 2]: the occluder's centre (x, y) as fractions of the side (other kinds ignore it).
    fills [N, 3]: the occluder's colour, normalised like the pixels; None: 0, the mean colour.
    """
    out = pixels.clone()
    for kind_index, kind in enumerate(KINDS):
        rows = (kinds == kind_index).nonzero().flatten()
        if rows.numel() == 0:
            continue
        if kind == "blur":
            out[rows] = _blur(pixels[rows], strengths[rows])
        elif kind == "low_contrast":
            out[rows] = _fade(pixels[rows], strengths[rows])
        else:
            out[rows] = _occlude(pixels[rows], strengths[rows], centres[rows],
                                 None if fills is None else fills[rows])
    return out


def sample_views(pixels: torch.Tensor, count: int, generator: torch.Generator,
                 occluder_grey: tuple[float, float] | None = None) -> DegradedViews:
    """A weak and a strong degraded view of the first ``count`` images of ``pixels`` [B, 3, S, S].

    occluder_grey: draw each occluder a neutral grey with intensity uniform in this range of
    [0, 1] (one shade per image, shared by its two views); None: the mean colour.
    """
    head = pixels[:count]
    kinds = torch.randint(len(KINDS), (count,), generator=generator)
    low, high = WEAK_RANGE
    weak = low + (high - low) * torch.rand(count, generator=generator)
    strong = weak + (1 - weak) * (MIN_GAP + (1 - MIN_GAP) * torch.rand(count, generator=generator))
    centres = 0.25 + 0.5 * torch.rand(count, 2, generator=generator)
    fills = None
    if occluder_grey is not None:  # drawn last, so recipes without it keep their random stream
        darkest, lightest = occluder_grey
        fills = grey_fill(darkest + (lightest - darkest) * torch.rand(count, generator=generator))
    moved = [None if t is None else t.to(pixels.device) for t in (kinds, weak, strong, centres, fills)]
    kinds, weak, strong, centres, fills = moved
    weak_view = degrade(head, kinds, weak, centres, fills)
    return DegradedViews(count, weak_view, degrade(head, kinds, strong, centres, fills))


def grey_fill(intensity: torch.Tensor) -> torch.Tensor:
    """Neutral greys of intensity [N] in [0, 1], normalised like the model's input pixels: [N, 3]."""
    mean = torch.tensor(OPENAI_CLIP_MEAN, dtype=intensity.dtype)
    std = torch.tensor(OPENAI_CLIP_STD, dtype=intensity.dtype)
    return (intensity[:, None] - mean) / std


def _blur(images: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (one kernel size fits the largest)."""
    side = images.shape[-1]
    sigmas = (strengths * MAX_BLUR_SIGMA * side).clamp_min(1e-3)  # [N]
    radius = max(1, int(torch.ceil(3 * sigmas.max()).item()))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)  # [K]
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # [N, K]
    n, c, h, w = images.shape
    # grouped convolution: one group per (image, channel), each with its image's kernel
    flat = images.reshape(1, n * c, h, w)
    k = kernels.repeat_interleave(c, dim=0)  # [N*C, K]
    flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    flat = F.conv2d(flat, k[:, None, None, :], groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="replicate")
    flat = F.conv2d(flat, k[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def _fade(images: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """Pull every pixel towards its image's mean colour (contrast 1 -> MIN_CONTRAST)."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    keep = (1.0 - (1.0 - MIN_CONTRAST) * strengths)[:, None, None, None]
    return mean + (images - mean) * keep


def _occlude(images: torch.Tensor, strengths: torch.Tensor, centres: torch.Tensor,
             fills: torch.Tensor | None) -> torch.Tensor:
    """A square whose area grows with strength, of its fill colour (default 0: the mean colour)."""
    side = images.shape[-1]
    half = torch.sqrt(strengths * MAX_OCCLUDED_AREA) * side / 2  # [N]
    grid = torch.arange(side, device=images.device, dtype=images.dtype) + 0.5  # pixel centres
    cx, cy = centres[:, 0] * side, centres[:, 1] * side
    inside_x = (grid[None, :] - cx[:, None]).abs() <= half[:, None]  # [N, S]
    inside_y = (grid[None, :] - cy[:, None]).abs() <= half[:, None]
    hidden = inside_y[:, :, None] & inside_x[:, None, :]  # [N, S(y), S(x)]
    if fills is None:
        return images.masked_fill(hidden[:, None], 0.0)
    return torch.where(hidden[:, None], fills[:, :, None, None].to(images.dtype), images)
