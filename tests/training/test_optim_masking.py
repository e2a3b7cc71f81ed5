"""Schedule, parameter groups and masked inputs."""

import pytest
import torch

from models.architecture import ProLIP
from models.config import ModelConfig
from models.training.masking import masked_count, masked_ids, sample_masks
from models.training.optim import build_optimizer, lr_factor

from .conftest import TINY_MODEL


def test_warmup_then_cosine_to_the_floor():
    factors = [lr_factor(step, 4, 20, min_ratio=0.1) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)  # half-way through the decay


def test_groups_decay_only_weight_matrices_and_scale_the_uncertainty_heads(tiny_config):
    config = tiny_config(unc_lr_scale=10.0, weight_decay=0.2)
    model = ProLIP(ModelConfig.from_dict(TINY_MODEL))
    optimizer = build_optimizer(model, config)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{names[id(p)] for p in g["params"]} for g in optimizer.param_groups]
    decayed, undecayed, uncertainty = groups
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in decayed
    assert {"logit_scale", "logit_bias", "visual.ln_post.weight", "text.text_projection.bias"} <= undecayed
    assert uncertainty == {"visual.uncertainty_proj.weight", "visual.uncertainty_proj.bias",
                           "text.text_uncertainty_projection.weight", "text.text_uncertainty_projection.bias"}
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0, 0.0]
    assert optimizer.param_groups[2]["lr"] == pytest.approx(10 * config.lr)
    assert sum(len(g) for g in groups) == len(list(model.parameters()))


def test_masks_never_touch_special_tokens_and_keep_the_official_patch_share():
    ids = torch.tensor([[5, 6, 7, 8, 1, 0, 0], [9, 1, 0, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4, 1]])
    masks = sample_masks(ids, num_patches=16, count=3, drop_prob=0.99, keep_ratio=0.75, protected_ids={0, 1},
                         generator=torch.Generator().manual_seed(0))
    assert masks.token_mask.shape == (3, 7)
    assert not masks.token_mask[(ids == 0) | (ids == 1)].any()  # padding and EOS stay
    assert masks.token_mask[0, :4].all()  # with drop_prob ~1 every other token goes
    # the official masked image forward keeps int(N * drop_prob) patches (transformer.py l. 401)
    assert masks.keep_patches.tolist() == sorted(masks.keep_patches.tolist()) and len(masks.keep_patches) == 12
    replaced = masked_ids(ids, masks, replace_token=32000)
    assert (replaced[masks.token_mask] == 32000).all() and (replaced[~masks.token_mask] == ids[~masks.token_mask]).all()
    assert masked_count(128, 0.125) == 16 and masked_count(4, 0.1) == 1 and masked_count(128, 0.0) == 0


def test_siglip_ids_mask_as_the_official_line_does():
    """SigLIP ids (pad = EOS = 1): exactly the tokens of official ``texts != 1`` are maskable."""
    ids = torch.tensor([[17, 23, 5, 1, 1, 1], [40, 41, 42, 43, 44, 1]])
    masks = sample_masks(ids, num_patches=4, count=2, drop_prob=1.0 - 1e-9, keep_ratio=0.75, protected_ids={1},
                         generator=torch.Generator().manual_seed(1))
    assert torch.equal(masks.token_mask, ids != 1)


def test_official_defaults_resolve_per_architecture():
    from models.config import architecture_config
    from models.training import TrainConfig

    base = TrainConfig(arch="ViT-B-16-ProLIP")
    assert base.inclusion_alpha == 1e-7 and base.inclusion_alpha_occ == 1e-3 and base.vib_beta == 1e-4
    assert (base.drop_ratio, base.drop_prob, base.beta1, base.beta2, base.eps) == (0.125, 0.75, 0.9, 0.95, 1e-6)
    prolip = base.resolved(architecture_config("ViT-B-16-ProLIP"))
    assert (prolip.lr, prolip.weight_decay, prolip.inclusion_loss_eps, prolip.inclusion_loss_scale) == (
        5e-4, 0.2, -20.0, 1000.0)
    assert prolip.image_keep_ratio == 0.75 and prolip.replace_token is None  # no tokenizer given
    long = base.resolved(architecture_config("ViT-B-16-ProLIP-long"))
    assert (long.lr, long.weight_decay, long.inclusion_loss_eps, long.inclusion_loss_scale) == (
        1e-6, 0.01, -100.0, 10.0)
    explicit = TrainConfig(arch="ViT-B-16-ProLIP-long", inclusion_loss_eps=-10, lr=1e-3).resolved(
        architecture_config("ViT-B-16-ProLIP-long"))
    assert explicit.inclusion_loss_eps == -10 and explicit.lr == 1e-3  # a recipe's own choice wins


def test_replace_token_is_the_tokenizers_official_mask_token():
    from models.tokenizer import clip_bpe_tokenizer
    from models.training import TrainConfig

    config = TrainConfig(arch="ViT-H-14-ProLIP")
    assert config.resolved(None, clip_bpe_tokenizer(77)).replace_token == 286  # params.py: "CLIP: 286"


def test_demo_recipes_still_describe_how_the_demo_model_was_trained():
    """The shipped demo model masked 1 - drop_prob of the patches and replaced tokens by padding, with
    the last real token kept: its recipes say so explicitly, and give the very same masks."""
    import json
    from pathlib import Path

    import models
    from models.config import ModelConfig
    from models.tokenizer import load_tokenizer
    from models.training import TrainConfig

    recipes = Path(models.__file__).parent / "training" / "recipes"
    tokenizer = load_tokenizer()  # the demo model's own
    for recipe in sorted(recipes.glob("demo*.json")):
        raw = json.loads(recipe.read_text(encoding="utf-8"))
        if raw.get("drop_ratio") == 0.0:
            continue  # no masked forward at all (the demo CLIP): the mask settings do not apply
        config = TrainConfig.from_dict(raw)
        model_config = ModelConfig.from_dict(raw["model_config"]) if raw.get("model_config") else None
        resolved = config.resolved(model_config, tokenizer)
        assert (resolved.image_keep_ratio, resolved.replace_token, resolved.eps) == (0.25, 0, 1e-8), recipe.name
        assert (resolved.inclusion_loss_eps, resolved.inclusion_loss_scale, resolved.lr) == (
            raw["inclusion_loss_eps"], raw["inclusion_loss_scale"], raw["lr"])
    ids = tokenizer(["a red circle on the left", "an object", "a large blue square in the middle of a red circle"])
    masks = sample_masks(ids, 36, 3, 0.75, 0.25, tokenizer.special_ids, torch.Generator().manual_seed(5))
    # the rule the demo was trained with: real tokens except the last one, round(36 * (1 - 0.75)) patches
    generator = torch.Generator().manual_seed(5)
    old_patches = torch.randperm(36, generator=generator)[:round(36 * 0.25)].sort().values
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    real = ids != 0
    last = torch.where(real, positions, -1).max(dim=1, keepdim=True).values
    old_mask = (torch.rand(ids.shape, generator=generator) < 0.75) & real & (positions != last)
    assert torch.equal(masks.keep_patches, old_patches) and torch.equal(masks.token_mask, old_mask)
