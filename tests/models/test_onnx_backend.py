"""The ONNX Runtime backend equals PyTorch, at any batch size, and its cache is reused and invalidated."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.numpy import load_file

from models import load_model
from models.encoder import Encoder, TorchBackend
from models.onnx_backend import OnnxBackend, choose_providers, cuda_provider_missing_reason
from models.onnx_export import MODEL_FILE, publish_folder, tower_file, weights_key
from tests.conftest import REFERENCE, REFERENCE_MODELS

ATOL = 1e-4  # the bar; fp32 graphs land near 1e-6
HAS_CUDA_PROVIDER = cuda_provider_missing_reason() is None


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """One cache for the session: each reference checkpoint is exported once."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module", params=REFERENCE_MODELS)
def exported(request, onnx_cache):
    model = load_model(REFERENCE / request.param, device="cpu", dtype="fp32")
    return request.param, model, OnnxBackend.for_model(model, device="cpu", cache_dir=onnx_cache)


def random_inputs(model, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [B, 3, S, S] and SigLIP-style ids [B, L]: real tokens, EOS 1, then padding 0."""
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((batch, 3, model.image_size, model.image_size)).astype(np.float32)
    ids = np.zeros((batch, model.context_length), dtype=np.int64)
    for row in range(batch):
        length = rng.integers(1, model.context_length + 1)
        ids[row, :length] = rng.integers(2, model.config.text_cfg.vocab_size, length)
        ids[row, length - 1] = 1
    return pixels, ids


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_onnx_equals_torch_for_both_towers_at_any_batch_size(exported, batch):
    _, model, backend = exported
    torch_backend = TorchBackend(model)
    pixels, ids = random_inputs(model, batch, seed=batch)
    for encode, inputs in (("encode_image", pixels), ("encode_text", ids)):
        onnx_mean, onnx_logvar = getattr(backend, encode)(inputs)
        torch_mean, torch_logvar = getattr(torch_backend, encode)(inputs)
        assert onnx_mean.shape == (batch, model.embed_dim) and onnx_mean.dtype == np.float32
        np.testing.assert_allclose(onnx_mean, torch_mean, atol=ATOL, rtol=0)
        np.testing.assert_allclose(onnx_logvar, torch_logvar, atol=ATOL, rtol=0)


def test_onnx_reproduces_the_official_outputs(exported):
    name, _, backend = exported
    inputs = load_file(REFERENCE / name / "inputs.safetensors")
    expected = load_file(REFERENCE / name / "expected.safetensors")
    image_mean, image_logvar = backend.encode_image(inputs["pixel_values"])
    text_mean, text_logvar = backend.encode_text(inputs["input_ids"])
    np.testing.assert_allclose(image_mean, expected["image_mean"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(image_logvar, expected["image_logvar"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(text_mean, expected["text_mean"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(text_logvar, expected["text_logvar"], atol=ATOL, rtol=0)


def test_graphs_have_a_dynamic_batch_axis_and_nothing_else_dynamic(exported):
    _, model, backend = exported
    for tower, path in backend.files.items():
        graph = onnx.load(path, load_external_data=False).graph
        dims = graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param, f"{tower} batch axis is not symbolic"
        assert all(d.dim_value > 0 for d in dims[1:])


def test_second_load_reuses_the_cached_graphs(exported, onnx_cache):
    _, model, backend = exported
    stamps = {tower: os.stat(path).st_mtime_ns for tower, path in backend.files.items()}
    again = OnnxBackend.for_model(model, device="cpu", cache_dir=onnx_cache)
    assert again.files == backend.files
    assert {tower: os.stat(path).st_mtime_ns for tower, path in again.files.items()} == stamps
    assert not list(onnx_cache.glob("*/.*.tmp-*")), "a temp folder was left behind"


def test_changed_weights_get_a_new_graph(onnx_cache):
    model = load_model(REFERENCE / "h14like", device="cpu", dtype="fp32")
    _, ids = random_inputs(model, 3, seed=0)
    before = tower_file(model, "text", "fp32", onnx_cache)
    old_mean = ort.InferenceSession(str(before)).run(None, {"input_ids": ids})[0]
    with torch.no_grad():
        weight = model.text.text_projection.weight
        weight.add_(0.2 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    after = tower_file(model, "text", "fp32", onnx_cache)
    assert after != before and before.is_file()
    new_mean, new_logvar = ort.InferenceSession(str(after)).run(None, {"input_ids": ids})
    torch_mean, torch_logvar = TorchBackend(model).encode_text(ids)
    np.testing.assert_allclose(new_mean, torch_mean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(new_logvar, torch_logvar, atol=ATOL, rtol=0)
    assert np.abs(new_mean - old_mean).max() > 1e-2


def test_weights_key_follows_every_weight():
    model = load_model(REFERENCE / "b16like", device="cpu", dtype="fp32")
    key = weights_key(model)
    assert weights_key(model) == key
    with torch.no_grad():
        model.visual.transformer.resblocks[1].mlp.c_fc.bias[3] += 1e-6
    assert weights_key(model) != key


def test_int8_is_quantised_and_stays_close(exported, onnx_cache):
    _, model, backend = exported
    int8 = OnnxBackend.for_model(model, device="cpu", cache_dir=onnx_cache, precision="int8")
    assert int8.precision == "int8" and int8.files["image"] != backend.files["image"]
    ops = {node.op_type for node in onnx.load(int8.files["text"], load_external_data=False).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    pixels, ids = random_inputs(model, 5, seed=1)
    for encode, inputs in (("encode_image", pixels), ("encode_text", ids)):
        fp32_mean, _ = getattr(backend, encode)(inputs)
        int8_mean, _ = getattr(int8, encode)(inputs)
        assert np.abs(int8_mean - fp32_mean).max() > 1e-6, "int8 gave fp32's exact outputs"
        assert (int8_mean * fp32_mean).sum(axis=1).min() > 0.99


def test_a_corrupt_cached_graph_is_rebuilt(exported, onnx_cache):
    _, model, backend = exported
    int8 = OnnxBackend.for_model(model, device="cpu", cache_dir=onnx_cache, precision="int8")
    pixels, _ = random_inputs(model, 2, seed=2)
    reference = int8.encode_image(pixels)[0]
    int8.files["image"].write_bytes(b"not an onnx graph")  # e.g. a disk error after publishing
    rebuilt = OnnxBackend.for_model(model, device="cpu", cache_dir=onnx_cache, precision="int8")
    np.testing.assert_allclose(rebuilt.encode_image(pixels)[0], reference, atol=1e-6)


def test_a_failed_build_publishes_nothing(tmp_path):
    final = tmp_path / "key" / "image-fp32"

    def crash(folder):
        (folder / MODEL_FILE).write_bytes(b"half a graph")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_folder(final, crash, {})
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_the_first_published_copy_wins(tmp_path):
    final = tmp_path / "key" / "text-fp32"

    def raced(folder):  # another process publishes while this one is still building
        final.mkdir()
        (final / MODEL_FILE).write_bytes(b"theirs")
        (folder / MODEL_FILE).write_bytes(b"ours")

    assert publish_folder(final, raced, {}) == final
    assert (final / MODEL_FILE).read_bytes() == b"theirs"
    assert [p.name for p in final.parent.iterdir()] == ["text-fp32"]


def test_bad_inputs_are_clear_errors(exported):
    _, model, backend = exported
    size, length = model.image_size, model.context_length
    with pytest.raises(ValueError, match="pixels must have shape"):
        backend.encode_image(np.zeros((2, 3, size + 1, size), dtype=np.float32))
    with pytest.raises(ValueError, match="input_ids must have shape"):
        backend.encode_text(np.ones((2, length - 1), dtype=np.int64))
    with pytest.raises(ValueError, match="token ids must lie in"):
        backend.encode_text(np.full((1, length), model.config.text_cfg.vocab_size, dtype=np.int64))
    assert backend.encode_image(np.zeros((0, 3, size, size), dtype=np.float32))[0].shape == (0, model.embed_dim)
    assert backend.encode_text(np.zeros((0, length), dtype=np.int64))[1].shape == (0, model.embed_dim)


def test_device_choice_says_why():
    auto = choose_providers("auto")
    if HAS_CUDA_PROVIDER:
        assert auto.device == "cuda:0"
    else:
        assert auto.device == "cpu" and "onnxruntime-gpu" in auto.reason
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            choose_providers("cuda")
    assert choose_providers("auto", "int8").device == "cpu"
    assert choose_providers("cpu").providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="int8"):
        choose_providers("cuda:0", "int8")
    with pytest.raises(ValueError, match="unknown device"):
        choose_providers("tpu")
    with pytest.raises(ValueError, match="unknown ONNX precision"):
        choose_providers("cpu", "fp8")


def test_encoder_onnx_backend_equals_torch_backend(reference_model_with_tokenizer, onnx_cache):
    from PIL import Image

    texts = ["a red circle", "a photo of a dog", "the", "blue square green cat"]
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)) for _ in range(3)]
    torch_encoder = Encoder.load(reference_model_with_tokenizer, device="cpu", batch_size=2)
    onnx_encoder = Encoder.load(reference_model_with_tokenizer, backend="onnx", device="cpu", batch_size=2,
                                onnx_dir=onnx_cache)
    assert (onnx_encoder.backend.name, onnx_encoder.backend.precision) == ("onnx", "fp32")
    for encode, inputs in (("encode_texts", texts), ("encode_images", images)):
        a, b = getattr(onnx_encoder, encode)(inputs), getattr(torch_encoder, encode)(inputs)
        np.testing.assert_allclose(a.mean, b.mean, atol=ATOL, rtol=0)
        np.testing.assert_allclose(a.logvar, b.logvar, atol=ATOL, rtol=0)


def test_encoder_rejects_dtypes_the_onnx_backend_cannot_run(reference_model_with_tokenizer):
    with pytest.raises(ValueError, match="use backend torch for fp16/bf16"):
        Encoder.load(reference_model_with_tokenizer, backend="onnx", dtype="fp16")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Encoder.load(reference_model_with_tokenizer, threads=0)


@pytest.mark.skipif(not (HAS_CUDA_PROVIDER and torch.cuda.is_available()), reason="needs onnxruntime-gpu and a GPU")
def test_cuda_provider_equals_torch(onnx_cache):
    model = load_model(REFERENCE / "b16like", device="cpu", dtype="fp32")
    backend = OnnxBackend.for_model(model, device="cuda", cache_dir=onnx_cache)
    assert backend.device == "cuda:0"
    pixels, ids = random_inputs(model, 3, seed=4)
    np.testing.assert_allclose(backend.encode_image(pixels)[0], TorchBackend(model).encode_image(pixels)[0],
                               atol=ATOL, rtol=0)
    np.testing.assert_allclose(backend.encode_text(ids)[1], TorchBackend(model).encode_text(ids)[1],
                               atol=ATOL, rtol=0)
