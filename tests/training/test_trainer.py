"""The training loop: bit-exact resume, exact gradient accumulation, export, fine-tuning, CLI."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import load_model
from models.encoder import Encoder
from models.loss import ProLIPLoss
from models.preprocess import ImagePreprocessor
from models.training import train
from models.training.data import PairIndex, PairStream
from models.training.degrade import KINDS, degrade
from models.training.distributed import World
from models.training.optim import build_optimizer
from models.training.trainer import TrainingForward, _aux_inputs, build_model, build_tokenizer, optimizer_step
from service.cli import main


def _weights(folder):
    return load_file(folder / "model.safetensors")


def test_resume_continues_bit_for_bit(tiny_config, tmp_path):
    # every optional term on, so the checkpoint must also carry their random draws
    common = dict(steps=6, accum_steps=2, drop_ratio=0.25, save_every=3, inclusion_alpha_broader=1.0,
                  inclusion_alpha_degraded=1.0, degraded_ratio=0.25)
    straight = train(tiny_config(output_dir=str(tmp_path / "straight"), **common), progress=False)
    first = train(tiny_config(output_dir=str(tmp_path / "split"), stop_after=3, **common), progress=False)
    assert first.step == 3 and first.model_dir is None and first.checkpoint.is_file()
    resumed = train(tiny_config(output_dir=str(tmp_path / "split"), **common), resume="auto", progress=False)
    assert resumed.step == 6
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log has one line per step, none duplicated by the resume
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_training_changes_weights_and_lowers_the_loss(tiny_config):
    result = train(tiny_config(steps=12, lr=3e-3), progress=False)
    lines = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"ppcl", "inclusion", "img_inclusion", "txt_inclusion", "vib", "loss", "lr"} <= set(lines[0])
    assert np.mean([x["loss"] for x in lines[-3:]]) < np.mean([x["loss"] for x in lines[:3]])


def test_accumulation_gives_the_gradient_of_the_whole_batch(tiny_config):
    """k micro-batches with cached features == one batch: same loss terms, same gradients.

    Compared on gradients, not on weights after AdamW: Adam turns the ~1e-9 noise on
    gradient-free parameters (attention key biases) into full-size steps.
    """
    gradients, losses = [], []
    extras = dict(drop_ratio=0.25, inclusion_alpha_broader=1.0, inclusion_alpha_degraded=1.0, degraded_ratio=0.25)
    aux = None
    for accum in (4, 1):
        config = tiny_config(accum_steps=accum, **extras)
        torch.manual_seed(0)
        model, _ = build_model(config)
        tokenizer = build_tokenizer(config, model, None)
        config = config.resolved(model.config, tokenizer)
        stream = PairStream(PairIndex(config.data), ImagePreprocessor(32), tokenizer, seed=0)
        batch = stream.next_batch(config.batch_size)
        if aux is None:  # drawn once, for the first micro-batch of 4 rows, and used by both runs
            aux = _aux_inputs(batch, config, 4, 4, 16, tokenizer, torch.Generator().manual_seed(0),
                              torch.device("cpu"))
            assert aux.masks is not None and aux.degraded is not None and aux.broader_ids is not None
        optimizer = build_optimizer(model, config)
        metrics = optimizer_step(TrainingForward(model), model, ProLIPLoss(**config.loss_kwargs()), optimizer, None,
                                 batch.pixels, batch.input_ids, aux, config, torch.device("cpu"), None, World())
        assert {"broader_inclusion", "degraded_inclusion", "img_inclusion"} <= set(metrics)
        losses.append(metrics["loss"])
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_exported_model_loads_encodes_and_fine_tunes(tiny_config, tmp_path):
    result = train(tiny_config(steps=2), progress=False)
    encoder = Encoder.load(result.model_dir, device="cpu")
    texts = encoder.encode_texts(["a red circle", "an object"])
    assert texts.mean.shape == (2, 16) and np.isfinite(texts.logvar).all()
    tuned = train(tiny_config(model_config=None, init_from=str(result.model_dir), tokenizer=None, steps=2,
                              output_dir=str(tmp_path / "tuned")), progress=False)
    before, after = load_model(result.model_dir), load_model(tuned.model_dir)
    assert not torch.equal(before.visual.proj, after.visual.proj)


def test_bad_rows_are_counted_and_skipped(tiny_data, tiny_config, tmp_path):
    rows = [json.loads(line) for line in (tiny_data / "train.jsonl").read_text().splitlines()]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rows[0]["image"] = str(tmp_path / "missing.png")
    rows[1]["image"] = str(tmp_path / "broken.png")
    rows[2]["caption"] = "  "
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("".join(json.dumps({**r, "image": str(tiny_data / r["image"]) if r["image"].startswith(
        "images/") else r["image"]}) + "\n" for r in rows) + "{not json\n")
    result = train(tiny_config(data=[str(manifest)], steps=8, batch_size=24), progress=False)
    assert result.step == 8
    assert result.skipped["empty caption"] == 1 and result.skipped["malformed row"] == 1
    assert result.skipped["missing image"] >= 1 and result.skipped["undecodable image"] >= 1


def test_cli_trains_from_a_recipe_with_overrides(tiny_config, tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(tiny_config().to_dict()))
    assert main(["train", "--config", str(recipe), "--steps", "2", "--output-dir", str(tmp_path / "cli"),
                 "--no-progress"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model" / "tokenizer.json").is_file()
    assert main(["train", "--config", str(recipe), "--data", str(tmp_path / "nope.jsonl"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_config_errors_are_explicit(tiny_config):
    with pytest.raises(ValueError, match="exactly one"):
        tiny_config(arch="ViT-B-16-ProLIP")
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(batch_size=10, accum_steps=4)
    with pytest.raises(ValueError, match="precision"):
        tiny_config(precision="int8")


def test_ordered_inclusion_terms_order_the_variances(tiny_config, tiny_data, rows_by_level):
    """With the broader and degraded terms on, broader captions and degraded images come out more uncertain."""
    result = train(tiny_config(steps=40, lr=3e-3, unc_lr_scale=10.0, inclusion_alpha_broader=1.0,
                               inclusion_alpha_degraded=10.0, degraded_ratio=0.5), progress=False)
    encoder = Encoder.load(str(result.model_dir))
    by_level = [encoder.encode_texts(captions).uncertainty.mean() for captions in rows_by_level]
    assert by_level == sorted(by_level, reverse=True), by_level

    model = load_model(str(result.model_dir))
    paths = [tiny_data / path for path in sorted(_images(tiny_data))[:8]]
    pixels = torch.from_numpy(ImagePreprocessor(32).array(paths))  # (8, 3, 32, 32)
    with torch.no_grad():
        for kind in range(len(KINDS)):
            strengths = [degrade(pixels, torch.full((8,), kind), torch.full((8,), s), torch.full((8, 2), 0.5))
                         for s in (0.0, 0.5, 1.0)]
            unc = [model.encode_image(view).uncertainty.mean().item() for view in strengths]
            assert unc[0] < min(unc[1:]), (KINDS[kind], unc)  # clean below both degraded views


def _images(tiny_data):
    return {json.loads(line)["image"] for line in (tiny_data / "train.jsonl").read_text().splitlines()}


@pytest.fixture
def rows_by_level(tiny_data):
    rows = [json.loads(line) for line in (tiny_data / "train.jsonl").read_text().splitlines()]
    return [sorted({row["caption"] for row in rows if row["level"] == level}) for level in range(4)]


def test_train_flags_explain_themselves_and_errors_name_them(tiny_config, tmp_path, capsys):
    """Issue #16, defect 14: `train` flags had no help text, and its errors named recipe fields."""
    import argparse

    from service.cli import build_parser

    parser = build_parser()
    train_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train_parser._actions:
        if action.option_strings and action.dest != "help":
            words = (action.help or "").split(" (default")[0]
            assert len(words) >= 8, (action.option_strings, action.help)  # more than "(default X)"
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(tiny_config().to_dict()))
    assert main(["train", "--config", str(recipe), "--arch", "ViT-B-16-ProLIP", "--init-from", str(tmp_path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "got --arch, --init-from" in err and "--model-config" in err and "model_config" not in err
    assert main(["train", "--config", str(recipe), "--batch-size", "10", "--accum-steps", "4", "--no-progress"]) == 2
    assert "--batch-size 10 is not divisible by --accum-steps 4" in capsys.readouterr().err


def test_a_fresh_fine_tune_says_where_it_starts_and_a_long_warmup_is_flagged(tiny_config, tmp_path, caplog):
    """Issue #16, defect 14: `--resume` with `--init-from` logged "starting from scratch"; a warm-up longer
    than the run went unremarked."""
    import logging

    base = train(tiny_config(steps=1, warmup_steps=0), progress=False)
    with caplog.at_level(logging.INFO, logger="models.training.trainer"):
        train(tiny_config(model_config=None, init_from=str(base.model_dir), tokenizer=None, steps=2, warmup_steps=5,
                          output_dir=str(tmp_path / "tuned")), resume="auto", progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"starting from {base.model_dir}" in m for m in messages), messages
    assert not any("scratch" in m for m in messages)
    assert any("warmup_steps (5) is not below steps (2)" in m for m in messages), messages
