"""Service fixtures: a real encoder on the reference checkpoint, real apps, real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import free_port  # noqa: F401  (also imported from here by the tests)


def make_settings(data_dir: Path, model_dir: Path, **overrides):
    from service.settings import load_settings

    values = dict(data_dir=data_dir, model_source=str(model_dir), device="cpu", demo=False)
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def make_client(tmp_path, model_dir, encoder):
    """Builds a TestClient on a fresh data dir; the app's lifespan runs for real."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    opened = []

    def build(data_dir: Path | None = None, **overrides) -> TestClient:
        settings = make_settings(data_dir or tmp_path / "data", model_dir, **overrides)
        client = TestClient(create_app(settings, encoder=encoder), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield build
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def png_bytes(seed: int, size: tuple[int, int] = (40, 48), mode: str = "RGB") -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


CAPTIONS = ["a red circle", "a blue square", "a photo of a dog", "a photo of a cat", "a green triangle",
            "an object", "a small white diamond on the left", "a large yellow square in the middle"]


def add_captions(client, name: str = "captions", texts=CAPTIONS):
    response = client.post(f"/v1/collections/{name}/items",
                           json={"items": [{"text": t, "metadata": {"n": i}} for i, t in enumerate(texts)]})
    assert response.status_code == 200, response.text
    return response.json()


def add_images(client, name: str = "images", seeds=range(6)):
    files = [("files", (f"img{s}.png", png_bytes(s), "image/png")) for s in seeds]
    response = client.post(f"/v1/collections/{name}/items", files=files,
                           data={"ids": [f"img-{s}" for s in seeds]})
    assert response.status_code == 200, response.text
    return response.json()


class Server:
    """`prolip-retrieval serve` in a child process on a loopback port."""

    def __init__(self, data_dir: Path, model_dir: Path, env: dict[str, str] | None = None, args: tuple = ()):
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"server-{self.port}.log"
        environment = dict(os.environ, PROLIP_DEVICE="cpu", PROLIP_DEMO="false", PROLIP_MODEL_SOURCE=str(model_dir))
        environment.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(data_dir), *args],
            env=environment, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def wait_ready(self, timeout: float = 60.0, path: str = "/healthz") -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except Exception:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_dir):
    """A real server with a caption and an image collection."""
    import httpx

    data_dir = tmp_path_factory.mktemp("server") / "data"
    running = Server(data_dir, model_dir)
    try:
        running.wait_ready()
        with httpx.Client(base_url=running.url, timeout=30) as http:
            add_captions(http)
            add_images(http)
        yield running
    finally:
        running.stop()
