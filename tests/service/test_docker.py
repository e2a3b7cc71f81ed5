"""The Compose file and Dockerfiles hang together (the Docker engine does not run here)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def _command(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def test_every_built_service_has_its_context_dockerfile_and_a_real_command(compose):
    subcommands = _subcommands()
    built = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert {"api", "worker"} <= set(built)
    for name, service in built.items():
        context = ROOT / service["build"]["context"]
        dockerfile = context / service["build"]["dockerfile"]
        assert context.is_dir(), name
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        text = dockerfile.read_text()
        for line in text.splitlines():  # everything the Dockerfile copies exists
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"
        command = _command(service["command"])
        assert command[0] == "prolip-retrieval", name
        assert command[1] in subcommands, f"{name} runs unknown subcommand {command[1]!r}"
        build_parser().parse_args(command[1:])  # flags are accepted (argparse exits on bad ones)
        assert "healthcheck" in service, f"{name} has no health check"


def test_redis_persists_every_write_and_everything_has_health_checks(compose):
    redis = compose["services"]["redis"]
    command = _command(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert "healthcheck" in redis and any(v.endswith(":/data") for v in redis["volumes"])


def test_api_uses_remote_workers_and_a_data_volume_and_worker_reserves_a_gpu(compose):
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["environment"]["ENCODER"] == "remote" and api["environment"]["REDIS_URL"].startswith("redis://")
    volumes = {v.split(":")[0] for v in api["volumes"]}
    assert volumes & set(compose["volumes"])
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)


def test_api_image_installs_cpu_torch_and_worker_image_cuda_and_gpu_libraries():
    api = (ROOT / "docker" / "api.Dockerfile").read_text()
    worker = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in api
    assert "nvidia/cuda" in worker and ".[gpu]" in worker
    gpu_extra = (ROOT / "pyproject.toml").read_text()
    assert "faiss-gpu" in gpu_extra and "onnxruntime-gpu" in gpu_extra
