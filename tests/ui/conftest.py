"""Browser-test fixtures: a real `prolip-retrieval serve` process on loopback, and one headless
Chromium (the Debian package, driven by Playwright) per test module.

The server runs the embedded demo model with a small demo collection, plus a job root holding
a few images and one broken file, so an indexing job has both successes and a failure to show.
Screenshots go to artifacts/ui/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).absolute().parents[2]  # the checkout whose service is tested
ARTIFACTS = ROOT / "artifacts" / "ui"
CHROMIUM = os.environ.get("PROLIP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DEMO_SCENES = 48  # enough for a histogram and for k=12 results, small enough to index in seconds
JOB_IMAGES = 6
STARTUP_TIMEOUT_S = 120
# the words of the demo world's captions, for small tokenizers of test checkpoints
DEMO_WORDS = ("a an the object of on in left right middle small large red green blue yellow purple white "
              "circle square triangle diamond photo").split()


@dataclass
class Server:
    url: str
    data_dir: Path
    job_root: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _model_source(tmp: Path) -> str | None:
    """The embedded demo model when this checkout has it; else the reference checkpoint with a
    small tokenizer (what the service's own tests use until the demo model lands)."""
    from models.loading import default_model_source

    if (Path(default_model_source()) / "model.safetensors").is_file():
        return None
    from tests.conftest import REFERENCE, write_wordlevel_tokenizer

    folder = tmp / "model"
    shutil.copytree(REFERENCE / "b16like", folder)
    write_wordlevel_tokenizer(folder / "tokenizer.json", DEMO_WORDS)
    return str(folder)


def _write_job_source(root: Path) -> Path:
    """A folder of demo-scene PNGs plus one file that is not an image (a failure with a reason)."""
    from models.demo_data import generate

    folder = root / "shapes"
    folder.mkdir(parents=True)
    for scene in generate("val", JOB_IMAGES):
        scene.image.save(folder / f"{scene.id}.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG file\n" * 4)
    return folder


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ui-server")
    yield from serve(tmp, _model_source(tmp))


def serve(tmp: Path, source: str | None) -> Iterator[Server]:
    """Run `prolip-retrieval serve` on ``source`` (None: the embedded demo model) until the generator closes."""
    data_dir, job_root = tmp / "data", tmp / "jobs"
    job_root.mkdir()
    _write_job_source(job_root)
    port = _free_port()
    # private URLs allowed: the web-image test indexes images from a file server on loopback
    env = {**os.environ, "PROLIP_DEMO_SCENES": str(DEMO_SCENES), "PROLIP_JOB_ROOTS": str(job_root),
           "PROLIP_DEVICE": "cpu", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1",
           "PROLIP_ALLOW_PRIVATE_URLS": "true"}
    for key in ("PROLIP_API_KEYS", "PROLIP_CONFIG", "REDIS_URL", "PROLIP_REDIS_URL", "ENCODER", "PROLIP_ENCODER",
                "PROLIP_MODEL_SOURCE"):
        env.pop(key, None)
    if source:
        env["PROLIP_MODEL_SOURCE"] = source
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", data_dir, job_root, log_path, process)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with server.api() as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                if client.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    pytest.fail(f"the server was not ready within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}; run scripts/system-deps.sh")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """What the page did wrong while a test ran: script errors and requests leaving the server."""

    def __init__(self, origin: str):
        self.origin = origin
        self.errors: list[str] = []
        self.foreign_requests: list[str] = []

    def on_console(self, message) -> None:
        # the browser logs every failed fetch; tests that provoke API errors check what the user sees instead
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def on_request(self, request) -> None:
        url = request.url
        if not (url.startswith(self.origin) or url.startswith(("data:", "blob:"))):
            self.foreign_requests.append(url)


@pytest.fixture
def page(browser, server, request):
    """A fresh page (own context, so no state leaks between tests) at phone or desktop size.
    Fails the test when the page throws or loads anything from outside the service."""
    viewport = getattr(request, "param", None) or {"width": 1280, "height": 900}
    context = browser.new_context(viewport=viewport, base_url=server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = PageProblems(server.url)
    page.on("pageerror", lambda error: problems.errors.append(str(error)))
    page.on("console", problems.on_console)
    page.on("request", problems.on_request)
    page.problems = problems
    yield page
    context.close()
    assert not problems.foreign_requests, f"the page loaded resources from elsewhere: {problems.foreign_requests}"
    assert not problems.errors, f"the page logged errors: {problems.errors}"


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
