"""`prolip-retrieval doctor` on this very machine: what it offers and why a GPU is or isn't used."""

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import torch

from models.doctor import diagnose, render

ROOT = Path(__file__).resolve().parents[2]


def test_findings_match_the_machine():
    findings = {f.topic: f for f in diagnose()}
    assert {"cpu", "torch", "torch CUDA", "torch threads", "torch backend", "onnxruntime", "onnx backend",
            "faiss", "faiss GPU"} <= set(findings)
    cuda = findings["torch CUDA"]
    if torch.cuda.is_available():
        assert cuda.status == "ok"
    else:
        assert cuda.status == "warn" and cuda.detail.startswith("not used: ")
        assert "CPU in fp32" in findings["torch backend"].detail
    assert f"{torch.get_num_threads()} intra-op threads" in findings["torch threads"].detail
    for provider in ort.get_available_providers():
        assert provider in findings["onnxruntime"].detail
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "install onnxruntime-gpu" in findings["onnxruntime CUDA"].detail
        assert "runs fp32 on cpu" in findings["onnx backend"].detail
    else:
        assert "onnxruntime CUDA" not in findings


def test_render_marks_warnings():
    text = render(diagnose())
    assert text.count("\n") == len(diagnose()) - 1
    if not torch.cuda.is_available():
        assert "[WARN] torch CUDA" in text


def test_cli_doctor_runs():
    done = subprocess.run([sys.executable, "-m", "service.cli", "--log-level", "WARNING", "doctor"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime" in done.stdout and "torch CUDA" in done.stdout and "faiss GPU" in done.stdout


def test_cli_doctor_lists_collections_with_their_model_family(tmp_path, clip_model_dir):
    from indexer import Catalog

    with Catalog(tmp_path / "data") as catalog:
        catalog.create("clip-texts", "text", 32, "clip@1", model_family="clip", deterministic=True)
        catalog.create("old", "image", 32, "prolip@1")  # as made before families were recorded
    done = subprocess.run([sys.executable, "-m", "service.cli", "--log-level", "WARNING", "doctor", "--data-dir",
                           str(tmp_path / "data"), "--model", str(clip_model_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{clip_model_dir}: clip family (deterministic: points, no uncertainty)" in done.stdout
    assert "collection clip-texts" in done.stdout
    assert "text, 0 items, clip, deterministic: no uncertainty" in done.stdout
    assert "collection old" in done.stdout and "unknown family" in done.stdout
