"""Degraded views: each kind changes what it should, in proportion to its strength."""

import pytest
import torch

from models.training.degrade import KINDS, MIN_CONTRAST, degrade, sample_views


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, 3, 32, 32, generator=generator)  # [N, 3, S, S]


def _apply(images, kind, strength):
    n = images.shape[0]
    return degrade(images, torch.full((n,), KINDS.index(kind)), torch.full((n,), strength), torch.full((n, 2), 0.5))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_strength_changes_nothing_and_strength_removes_detail(images, kind):
    torch.testing.assert_close(_apply(images, kind, 0.0), images, atol=1e-5, rtol=0)
    # each kind takes away more of the image's own variation as it grows
    detail = [(_apply(images, kind, s) - _apply(images, kind, s).mean(dim=(2, 3), keepdim=True)).std().item()
              for s in (0.0, 0.3, 0.6, 1.0)]
    assert detail == sorted(detail, reverse=True) and detail[-1] < 0.9 * detail[0]


def test_low_contrast_scales_deviations_exactly(images):
    faded = _apply(images, "low_contrast", 1.0)
    mean = images.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(faded - mean, (images - mean) * MIN_CONTRAST)


def test_blur_keeps_the_mean_colour(images):
    blurred = _apply(images, "blur", 1.0)
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.05, rtol=0)


def test_occluder_grows_with_strength_and_sits_at_its_centre(images):
    hidden = [(_apply(images, "occlusion", s) == 0).all(dim=1).float().mean().item() for s in (0.1, 0.5, 1.0)]
    assert hidden == sorted(hidden) and 0.3 < hidden[-1] < 0.6
    out = _apply(images, "occlusion", 0.5)
    assert (out[:, :, 16, 16] == 0).all() and (out[:, :, 0, 0] == images[:, :, 0, 0]).all()


def test_each_row_gets_its_own_kind(images):
    kinds = torch.tensor([0, 1, 2])
    out = degrade(images, kinds, torch.ones(3), torch.full((3, 2), 0.5))
    for row, kind in enumerate(KINDS):
        torch.testing.assert_close(out[row], _apply(images[row:row + 1], kind, 1.0)[0])


def test_views_are_reproducible_from_the_generator_and_the_strong_one_hides_more(images):
    a = sample_views(images, 2, torch.Generator().manual_seed(5))
    b = sample_views(images, 2, torch.Generator().manual_seed(5))
    assert a.count == 2 and a.weak.shape == (2, 3, 32, 32)
    assert torch.equal(a.weak, b.weak) and torch.equal(a.strong, b.strong)
    change = lambda view: (view - images[:2]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert (change(a.strong) > change(a.weak)).all()
