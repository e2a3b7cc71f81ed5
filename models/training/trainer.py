"""The training loop: ProLIP loss, masked inputs, accumulation, AMP, DDP, resumable checkpoints.

Any model family trains here (``models.families``). A deterministic one (CLIP) has no variances,
so its objective is PPCL without them, i.e. the SigLIP loss, and the uncertainty terms
(inclusion, VIB) must be off: ``validate_for_model`` says so before a step is taken.

One optimizer step:
1. set the LR (linear warm-up, cosine decay), take the next ``batch_size`` readable pairs;
2. draw the extra inputs of the optional inclusion terms from this process's own generator:
   masked inputs (patch subset, token masks), and, when enabled, degraded views of images
   and one broader caption per row that has one (see ``AuxInputs``);
3. forward and backward. With ``accum_steps`` k > 1 the batch is cut into k micro-batches:
   a no-grad pass caches every micro-batch's features, then each micro-batch is re-run
   with gradients while the others stand in from the cache (open_clip's scheme), so the
   loss and its gradient are those of the whole batch: every text is still a negative
   for every image. The logit scale and bias are live in the first pass only, so their
   gradient is counted once;
4. clip, step, clamp the logit scale to [0, ln 100] as the official recipe does.

Everything the next step depends on is in the checkpoint, so "N steps" and "k steps,
resume, N - k steps" give identical weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..architecture import GaussianEmbedding, ProLIP
from ..config import architecture_config
from ..families import build_model as build_family_model
from ..families import config_from_dict
from ..loading import load_model, save_model
from ..loss import ProLIPLoss
from ..preprocess import ImagePreprocessor
from ..tokenizer import Tokenizer, tokenizer_for
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Batch, PairIndex, PairStream
from .degrade import DegradedViews, sample_views
from .distributed import World, all_gather_objects, barrier, device_for, init_distributed, shutdown
from .masking import Masks, masked_count, masked_ids, sample_masks
from .optim import build_optimizer, lr_factor, set_lr

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100)  # the official clamp
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    output_dir: Path
    model_dir: Path | None  # the exported model (released layout + tokenizer), once training finished
    checkpoint: Path | None
    last_metrics: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # bad pairs dropped, by reason, over all processes


@dataclass
class AuxInputs:
    """Extra forwards of the first micro-batch, each for one optional inclusion term."""

    masks: Masks | None = None  # masked versions of its first rows (official occlusion inclusion) ...
    masked_ids: torch.Tensor | None = None  # ... and their captions with the drawn tokens replaced [count, L]
    broader_rows: torch.Tensor | None = None  # [N] rows with a broader caption ...
    broader_ids: torch.Tensor | None = None  # [N, L] ... and that caption (broader inclusion)
    degraded: DegradedViews | None = None  # weak and strong views of its first rows (degraded inclusion)


class TrainingForward(nn.Module):
    """Both towers on a batch, plus the extra forwards of ``AuxInputs``: one DDP forward per pass.

    Returns a dict of [rows, D] tensors: image_mean/logvar, text_mean/logvar, and for each
    extra forward its own pair of entries.
    """

    def __init__(self, model: ProLIP):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, aux: AuxInputs | None = None
                ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        _put(out, "image", self.model.encode_image(pixels))
        _put(out, "text", self.model.encode_text(input_ids))
        if aux is None:
            return out
        if aux.masks is not None:
            count = aux.masks.count
            _put(out, "masked_image", self.model.encode_image(pixels[:count], keep_patches=aux.masks.keep_patches))
            _put(out, "masked_text", self.model.encode_text(aux.masked_ids))
        if aux.broader_ids is not None:
            _put(out, "broader", self.model.encode_text(aux.broader_ids))
        if aux.degraded is not None:
            _put(out, "weak", self.model.encode_image(aux.degraded.weak))
            _put(out, "strong", self.model.encode_image(aux.degraded.strong))
        return out


def _put(out: dict[str, torch.Tensor], name: str, embedding: GaussianEmbedding) -> None:
    out[f"{name}_mean"] = embedding.mean
    if embedding.logvar is not None:  # deterministic models have none (and DDP wants tensors only)
        out[f"{name}_logvar"] = embedding.logvar


def _get(out: dict[str, torch.Tensor], name: str) -> GaussianEmbedding | None:
    if f"{name}_mean" not in out:
        return None
    return GaussianEmbedding(out[f"{name}_mean"], out.get(f"{name}_logvar"))


# --------------------------------------------------------------------------- set-up helpers
def build_model(config: TrainConfig) -> tuple[ProLIP, Path | None]:
    """The model to train (fp32, train mode) and the folder it came from (for its tokenizer).

    Its family: ``init_from``'s own (detected from its config, or ``config.family``); for an
    inline ``model_config`` ``config.family``, ProLIP when unset (this trainer's native family,
    and what recipes without a family field have always meant); ``arch`` names are ProLIP.
    """
    if config.init_from:
        model = load_model(config.init_from, device="cpu", dtype="fp32", family=config.family)
        folder = model.source_dir
        model.requires_grad_(True)
    elif config.arch:
        if config.family not in (None, "prolip"):
            raise ValueError(f"arch {config.arch!r} is a ProLIP architecture, not family {config.family!r}")
        model, folder = ProLIP(architecture_config(config.arch)), None
    else:
        model = build_family_model(config_from_dict(config.model_config, config.family or "prolip"))
        folder = None
    validate_for_model(config, model)
    return model.train(), folder


UNCERTAINTY_TERMS = ("vib_beta", "inclusion_alpha", "inclusion_alpha_occ", "inclusion_alpha_broader",
                     "inclusion_alpha_degraded")


def validate_for_model(config: TrainConfig, model) -> None:
    """Refuse a recipe whose loss terms need variances the model does not output."""
    if not model.deterministic:
        return
    enabled = [name for name in UNCERTAINTY_TERMS if getattr(config, name) > 0]
    if enabled:
        raise ValueError(f"a {model.family} model is deterministic (no variances), so its loss is PPCL without "
                         f"variances (the SigLIP loss); set {', '.join(f'{name}=0' for name in enabled)}")


def build_tokenizer(config: TrainConfig, model: ProLIP, folder: Path | None) -> Tokenizer:
    """``config.tokenizer`` (a tokenizer.json, a folder holding one, or "clip-bpe"), else the model's own."""
    return tokenizer_for(model.config, folder, tokenizer=config.tokenizer)


def precision_setup(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed).

    "auto" is AMP on CUDA (bf16 where supported, else fp16 with loss scaling) and fp32 on
    CPU, where bf16 matmuls are emulated on most machines: CPU AMP only when asked for.
    """
    if precision == "auto":
        if device.type != "cuda":
            return None, False
        precision = "amp_bf16" if torch.cuda.is_bf16_supported() else "amp_fp16"
    if precision == "fp32":
        return None, False
    dtype = torch.bfloat16 if precision == "amp_bf16" else torch.float16
    return dtype, dtype == torch.float16 and device.type == "cuda"


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _split(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    return list(tensor.chunk(parts))


def _cat(parts: list[dict[str, torch.Tensor]], name: str) -> GaussianEmbedding:
    if len(parts) == 1:
        return _get(parts[0], name)
    logvar = (torch.cat([part[f"{name}_logvar"] for part in parts]) if f"{name}_logvar" in parts[0] else None)
    return GaussianEmbedding(torch.cat([part[f"{name}_mean"] for part in parts]), logvar)


# --------------------------------------------------------------------------- one step
def optimizer_step(runner: nn.Module, model: ProLIP, loss_fn: ProLIPLoss, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, pixels: torch.Tensor, input_ids: torch.Tensor,
                   aux: AuxInputs | None, config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None,
                   world: World) -> dict[str, float]:
    """Forward/backward over the batch (in ``accum_steps`` passes) and one optimizer update.

    The extra forwards of ``aux`` belong to the first micro-batch; their terms get their
    gradient in its pass only.
    """
    k = config.accum_steps
    pixel_parts, id_parts = _split(pixels, k), _split(input_ids, k)
    optimizer.zero_grad(set_to_none=True)
    cached: list[dict[str, torch.Tensor]] = []
    if k > 1:
        with torch.no_grad(), _autocast(device, amp_dtype):
            cached = [runner(p, i, aux if j == 0 else None) for j, (p, i) in enumerate(zip(pixel_parts, id_parts,
                                                                                         strict=True))]
    terms: dict[str, torch.Tensor] = {}
    for j in range(k):
        sync = runner.no_sync() if world.distributed and j < k - 1 else contextlib.nullcontext()
        with sync, _autocast(device, amp_dtype):
            live = runner(pixel_parts[j], id_parts[j], aux if j == 0 else None)
            parts = cached[:j] + [live] + cached[j + 1:] if k > 1 else [live]
            image, text = _cat(parts, "image"), _cat(parts, "text")
            first = parts[0]
            first_image, first_text = _get(first, "image"), _get(first, "text")
            broader = degraded = None
            if aux is not None and aux.broader_ids is not None:
                rows = aux.broader_rows
                broader = (GaussianEmbedding(first_text.mean[rows], first_text.logvar[rows]), _get(first, "broader"))
            if aux is not None and aux.degraded is not None:
                count = aux.degraded.count
                clean = GaussianEmbedding(first_image.mean[:count], first_image.logvar[:count])
                degraded = [clean, _get(first, "weak"), _get(first, "strong")]
            scale = model.logit_scale.exp()
            bias = model.logit_bias if model.logit_bias is not None else torch.zeros((), device=scale.device)
            if j > 0:  # their gradient was taken in the first pass
                scale, bias = scale.detach(), bias.detach()
            terms = loss_fn(image, text, scale, bias, _get(first, "masked_image"), _get(first, "masked_text"),
                            output_dict=True, broader=broader, degraded=degraded)
            total = sum(terms.values())
        (scaler.scale(total) if scaler is not None else total).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if config.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    metrics = {name: float(value.detach()) for name, value in terms.items()}
    metrics["loss"] = float(total.detach())
    if image.logvar is not None:
        metrics["image_uncertainty"] = float(image.logvar.detach().float().exp().sum(-1).mean())
        metrics["text_uncertainty"] = float(text.logvar.detach().float().exp().sum(-1).mean())
    return metrics


# --------------------------------------------------------------------------- the run
def train(config: TrainConfig, resume: str | os.PathLike | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume: a checkpoint path or "auto") the training described by ``config``.

    Under torchrun every process calls this; each reads its own share of the data.
    """
    config.validate()
    wants_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    world = init_distributed("cuda" if wants_cuda else "cpu")
    try:
        return _train(config, world, resume, progress)
    finally:
        shutdown(world)


def _train(config: TrainConfig, world: World, resume: str | os.PathLike | None, progress: bool) -> TrainResult:
    device = device_for(world, config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    amp_dtype, needs_scaler = precision_setup(config.precision, device)
    output = Path(config.output_dir)
    checkpoints = output / CHECKPOINT_DIR

    torch.manual_seed(config.seed)  # identical initial weights on every process
    model, source_folder = build_model(config)
    tokenizer = build_tokenizer(config, model, source_folder)
    config = config.resolved(model.config, tokenizer)  # the official values this model trains with
    model.to(device)
    index = PairIndex(config.data)
    stream = PairStream(index, ImagePreprocessor(model.image_size), tokenizer, config.seed, world.rank,
                        world.world_size)
    mask_generator = torch.Generator().manual_seed(config.seed * 7919 + world.rank)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type) if needs_scaler else None
    loss_fn = ProLIPLoss(**config.loss_kwargs(), rank=world.rank, world_size=world.world_size)
    step = 0

    found = ckpt.find_checkpoint(resume, checkpoints) if resume is not None else None
    if found is not None:
        state = ckpt.load_checkpoint(found)
        if state["world_size"] != world.world_size:
            raise ValueError(f"{found} was written by {state['world_size']} processes; resume with as many "
                             f"(this run has {world.world_size})")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        stream.load_state_dict(state["streams"][world.rank])
        mask_generator.set_state(state["mask_generators"][world.rank])
        ckpt.restore_rng_states(state["rng"])
        log.info("resumed from %s at step %d", found, step)
    elif resume is not None and str(resume) == "auto":
        start = (f"from {config.init_from}" if config.init_from else
                 f"from a new {config.arch or 'model'} (random weights)")
        log.info("no checkpoint in %s; starting %s", checkpoints, start)
    if world.is_main:
        for warning in config.warnings():
            log.warning("%s", warning)

    runner: nn.Module = TrainingForward(model)
    if world.distributed:
        runner = torch.nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None)
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
        _trim_metrics(output / METRICS_FILE, step)
        (output / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        log.info("training %s parameters for %d steps on %s (%d process(es), %s)",
                 f"{sum(p.numel() for p in model.parameters()):,}", config.steps, device, world.world_size,
                 amp_dtype or "fp32")

    num_patches = model.config.vision_cfg.grid_size ** 2
    # masked forwards only feed the occlusion inclusion term, which deterministic models do not have
    count = 0 if model.deterministic else min(masked_count(config.batch_size, config.drop_ratio),
                                              config.micro_batch_size)
    degraded_count = (min(masked_count(config.batch_size, config.degraded_ratio), config.micro_batch_size)
                      if config.inclusion_alpha_degraded > 0 else 0)
    last_saved: Path | None = found
    metrics: dict = {}
    bar = _progress_bar(progress and world.is_main, step, config.steps)
    started, started_step = time.perf_counter(), step
    end = min(config.steps, config.stop_after or config.steps)
    while step < end:
        set_lr(optimizer, lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio))
        batch = stream.next_batch(config.batch_size)
        aux = _aux_inputs(batch, config, count, degraded_count, num_patches, tokenizer, mask_generator, device)
        metrics = optimizer_step(runner, model, loss_fn, optimizer, scaler, batch.pixels.to(device),
                                 batch.input_ids.to(device), aux, config, device, amp_dtype, world)
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if step % config.log_every == 0 or step == end:
            elapsed = time.perf_counter() - started
            metrics = _log_metrics(output, world, step, stream, optimizer, model, metrics,
                                   (step - started_step) * config.batch_size * world.world_size / max(elapsed, 1e-9))
        if step % config.save_every == 0 or step == end:
            last_saved = _save(checkpoints, step, config, world, model, optimizer, scaler, stream, mask_generator)
    if bar is not None:
        bar.close()

    skipped = _total_skipped(world, stream)
    model_dir = None
    if step >= config.steps and world.is_main:
        model_dir = export_model(model, tokenizer, output / MODEL_DIR, config)
    barrier(world)
    index.close()
    return TrainResult(step, output, model_dir, last_saved, metrics, skipped)


def _aux_inputs(batch: Batch, config: TrainConfig, masked: int, degraded: int, num_patches: int,
                tokenizer: Tokenizer, generator: torch.Generator, device: torch.device) -> AuxInputs | None:
    """The extra forwards this step needs, drawn from this process's generator (checkpointed).

    ``config`` must be resolved for the model (``TrainConfig.resolved``).
    """
    aux = AuxInputs()
    if masked:
        if config.image_keep_ratio is None or config.replace_token is None:
            raise ValueError("resolve the training config for the model first (TrainConfig.resolved)")
        masks = sample_masks(batch.input_ids, num_patches, masked, config.drop_prob, config.image_keep_ratio,
                             tokenizer.special_ids, generator)
        aux.masks = Masks(masks.count, masks.keep_patches.to(device), masks.token_mask.to(device))
        aux.masked_ids = masked_ids(batch.input_ids, masks, config.replace_token).to(device)
    if config.inclusion_alpha_broader > 0:
        # only rows of the first micro-batch: the extra forwards belong to its pass
        rows = batch.broader_rows < config.micro_batch_size
        if rows.any():
            aux.broader_rows = batch.broader_rows[rows].to(device)
            aux.broader_ids = batch.broader_ids[rows].to(device)
    if degraded:
        grey = tuple(config.occluder_grey) if config.occluder_grey is not None else None
        aux.degraded = sample_views(batch.pixels, degraded, generator, grey)
        aux.degraded = DegradedViews(degraded, aux.degraded.weak.to(device), aux.degraded.strong.to(device))
    if aux.masks is None and aux.broader_ids is None and aux.degraded is None:
        return None
    return aux


def _progress_bar(enabled: bool, step: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True)


def _total_skipped(world: World, stream: PairStream) -> dict[str, int]:
    """Bad pairs dropped while indexing (once) plus while reading (every process)."""
    totals: dict[str, int] = dict(stream.index.skipped)
    for counts in all_gather_objects(world, dict(stream.skipped)):
        for reason, number in counts.items():
            totals[reason] = totals.get(reason, 0) + number
    return totals


def _log_metrics(output: Path, world: World, step: int, stream: PairStream, optimizer: torch.optim.Optimizer,
                 model: ProLIP, metrics: dict, samples_per_s: float) -> dict:
    if world.distributed:  # average the per-process terms for the log
        values = torch.tensor(list(metrics.values()), dtype=torch.float64)
        torch.distributed.all_reduce(values)
        metrics = dict(zip(metrics, (values / world.world_size).tolist(), strict=True))
    skipped = _total_skipped(world, stream)
    record = {"step": step, "epoch": stream.epoch, "lr": optimizer.param_groups[0]["lr"], **metrics,
              "logit_scale": float(model.logit_scale.detach().exp()),
              "logit_bias": float(model.logit_bias.detach()) if model.logit_bias is not None else 0.0,
              "samples_per_s": round(samples_per_s, 2), "skipped": skipped}
    if world.is_main:
        with open(output / METRICS_FILE, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
    return record


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines of steps after the checkpoint (a crashed run wrote them)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _save(folder: Path, step: int, config: TrainConfig, world: World, model: ProLIP, optimizer, scaler,
          stream: PairStream, mask_generator: torch.Generator) -> Path | None:
    streams = all_gather_objects(world, stream.state_dict())
    generators = all_gather_objects(world, mask_generator.get_state())
    path = None
    if world.is_main:
        state = {
            "step": step, "world_size": world.world_size, "config": config.to_dict(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "streams": streams, "mask_generators": generators, "rng": ckpt.rng_states(),
        }
        path = ckpt.save_checkpoint(folder, step, state, config.keep_checkpoints)
    barrier(world)
    return path


def export_model(model: ProLIP, tokenizer: Tokenizer, folder: Path, config: TrainConfig) -> Path:
    """The trained model in the released layout, with its tokenizer and training recipe beside it.

    The tokenizer is saved as a ``tokenizer.json`` that records its pad id; the shipped
    CLIP BPE needs no file (a CLIP-vocabulary config selects it again).
    """
    save_model(model, folder)
    tokenizer.save(folder)
    (folder / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    log.info("exported the trained model to %s", folder)
    return folder
