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


def _profile(compose: dict, name: str | None) -> dict:
    """The services ``docker compose [--profile name] up`` starts: those without profiles, plus the profile's."""
    return {service: spec for service, spec in compose["services"].items()
            if not spec.get("profiles") or (name is not None and name in spec["profiles"])}


def test_the_default_profile_is_the_single_process_stack(compose):
    assert set(_profile(compose, None)) == {"redis", "api", "worker"}
    assert "PROLIP_MILVUS_URI" not in compose["services"]["api"]["environment"]


def test_the_scale_profile_runs_milvus_standalone_and_stateless_replicas_behind_a_load_balancer(compose):
    services = _profile(compose, "scale")
    assert {"redis", "worker", "etcd", "minio", "milvus", "api-replica", "lb"} <= set(services)
    milvus = services["milvus"]
    assert milvus["command"][-1] == "standalone" and milvus["image"].startswith("milvusdb/milvus:v2.5")
    assert {"etcd", "minio"} <= set(milvus["depends_on"])
    assert milvus["environment"]["ETCD_ENDPOINTS"].startswith("etcd:")
    assert milvus["environment"]["MINIO_ADDRESS"].startswith("minio:")
    replica = services["api-replica"]
    env = replica["environment"]
    assert env["PROLIP_MILVUS_URI"] == "http://milvus:19530" and env["REDIS_URL"].startswith("redis://redis:")
    assert env["ENCODER"] == "remote" and env["PROLIP_MILVUS_CONSISTENCY"] == "Strong"
    from service.settings import load_settings

    settings = load_settings(**{key.removeprefix("PROLIP_").lower(): value for key, value in env.items()
                                if key.startswith("PROLIP_")}, redis_url=env["REDIS_URL"], encoder="remote")
    assert settings.shared_state  # the replicas keep no state of their own
    assert replica["deploy"]["replicas"] >= 2
    media = next(v for v in replica["volumes"] if v.split(":")[1] == env["PROLIP_MEDIA_DIR"])
    assert media.split(":")[0] in compose["volumes"]  # a named volume every replica mounts
    assert {"redis", "milvus"} <= set(replica["depends_on"])
    lb = services["lb"]
    config = lb["volumes"][0].split(":")[0]
    text = (ROOT / config).read_text()
    assert "server api-replica:8000" in text and "proxy_pass http://api" in text
    assert any(port.endswith(":8080") for port in lb["ports"])
    redis = compose["services"]["redis"]
    command = _command(redis["command"])
    assert command[command.index("--appendfsync") + 1] == "always"  # jobs and leases are acknowledged durably
