"""PyTorch precision paths: fp32 is the CPU default; bf16/fp16 run when asked and stay close to fp32."""

import logging

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from models import load_model
from models.device import select
from models.encoder import Encoder, TorchBackend
from tests.conftest import REFERENCE


def outputs(backend, name):
    inputs = load_file(REFERENCE / name / "inputs.safetensors")
    return (*backend.encode_image(inputs["pixel_values"]), *backend.encode_text(inputs["input_ids"]))


def assert_close_to_official(got, name, mean_cos, logvar_atol):
    expected = load_file(REFERENCE / name / "expected.safetensors")
    keys = ("image_mean", "image_logvar", "text_mean", "text_logvar")
    for key, value in zip(keys, got, strict=True):
        assert value.dtype == np.float32
        if key.endswith("mean"):
            assert (value * expected[key]).sum(axis=1).min() > mean_cos, key
        else:
            np.testing.assert_allclose(value, expected[key], atol=logvar_atol, rtol=0, err_msg=key)


def test_cpu_defaults_to_fp32(reference_model_with_tokenizer):
    assert select("cpu", "auto").dtype == torch.float32
    encoder = Encoder.load(reference_model_with_tokenizer, device="cpu")
    assert (encoder.backend.device, encoder.backend.precision) == ("cpu", "fp32")
    auto = select("auto", "auto")
    if not torch.cuda.is_available():
        assert (auto.device.type, auto.dtype) == ("cpu", torch.float32)
        assert "using CPU because" in auto.reason


@pytest.mark.parametrize("name", ["b16like", "h14like"])
def test_bf16_on_cpu_runs_when_asked_and_says_it_is_slow(name, caplog):
    with caplog.at_level(logging.WARNING, logger="models.device"):
        model = load_model(REFERENCE / name, device="cpu", dtype="bf16")
    assert "slower than fp32" in caplog.text
    backend = TorchBackend(model)
    assert backend.precision == "bf16" and next(model.parameters()).dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits: means agree in direction, log-variances to a few hundredths
    assert_close_to_official(outputs(backend, name), name, mean_cos=0.999, logvar_atol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_cuda_precisions_match_the_official_outputs(dtype):
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = load_model(REFERENCE / "b16like", device="cuda", dtype=dtype)
    backend = TorchBackend(model)
    assert backend.device.startswith("cuda") and backend.precision == dtype
    tolerance = {"fp32": 1e-3, "fp16": 0.02, "bf16": 0.1}[dtype]  # TF32 may serve fp32 matmuls
    assert_close_to_official(outputs(backend, "b16like"), "b16like", mean_cos=0.999, logvar_atol=tolerance)
