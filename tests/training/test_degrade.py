"""Degraded views: each kind changes what it should, in proportion to its strength."""

import pytest
import torch

from models.training.degrade import KINDS, MIN_CONTRAST, degrade, grey_fill, sample_views


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


def test_grey_occluders_are_the_asked_shade_in_pixel_space(images):
    from models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    shades = torch.tensor([0.3, 0.55, 0.8])
    fills = grey_fill(shades)
    n = images.shape[0]
    out = degrade(images, torch.full((n,), KINDS.index("occlusion")), torch.full((n,), 0.5),
                  torch.full((n, 2), 0.5), fills)
    centre = out[:, :, 16, 16]  # [N, 3], normalised
    pixel = centre * torch.tensor(OPENAI_CLIP_STD) + torch.tensor(OPENAI_CLIP_MEAN)
    torch.testing.assert_close(pixel, shades[:, None].expand(n, 3))  # neutral: every channel the same
    assert (out[:, :, 0, 0] == images[:, :, 0, 0]).all()


def test_grey_option_keeps_the_views_of_recipes_without_it(images):
    seed = 5  # draws occlusion for row 0 and other kinds for rows 1 and 2 (checked below)
    plain = sample_views(images, 3, torch.Generator().manual_seed(seed))
    grey = sample_views(images, 3, torch.Generator().manual_seed(seed), occluder_grey=(0.4, 0.4))
    kinds = [KINDS[k] for k in torch.randint(len(KINDS), (3,), generator=torch.Generator().manual_seed(seed))]
    assert kinds[0] == "occlusion" and "occlusion" not in kinds[1:]
    # the same square, now grey; the shade is drawn after everything else, so other kinds are untouched
    assert not torch.equal(grey.strong[0], plain.strong[0])
    assert torch.equal(grey.weak[1:], plain.weak[1:]) and torch.equal(grey.strong[1:], plain.strong[1:])


@pytest.mark.parametrize("bad", [[0.8, 0.3], [0.2], [-0.1, 0.5], [0.5, 1.5]])
def test_config_refuses_a_bad_grey_range(bad):
    from models.training.config import TrainConfig

    with pytest.raises(ValueError, match="occluder_grey"):
        TrainConfig(arch="ViT-B-16-ProLIP", occluder_grey=bad)
