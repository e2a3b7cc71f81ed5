"""Schedule, parameter groups and masked inputs."""

import pytest
import torch

from models.architecture import ProLIP
from models.config import ModelConfig
from models.training.masking import masked_count, sample_masks
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


def test_masks_keep_padding_and_the_final_token():
    ids = torch.tensor([[5, 6, 7, 8, 1, 0, 0], [9, 1, 0, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4, 1]])
    masks = sample_masks(ids, num_patches=16, count=3, drop_prob=0.99, pad_id=0,
                         generator=torch.Generator().manual_seed(0))
    assert masks.token_mask.shape == (3, 7)
    assert not masks.token_mask[ids == 0].any()  # padding stays padding
    assert not masks.token_mask[0, 4] and not masks.token_mask[1, 1] and not masks.token_mask[2, 6]  # EOS kept
    assert masks.token_mask[0, :4].all()  # with drop_prob ~1 every other real token goes
    assert masks.keep_patches.tolist() == sorted(masks.keep_patches.tolist()) and len(masks.keep_patches) == 1
    assert masked_count(128, 0.125) == 16 and masked_count(4, 0.1) == 1 and masked_count(128, 0.0) == 0
