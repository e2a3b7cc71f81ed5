"""Retake the README's screenshots of the web UI (docs/ui-search.png, docs/ui-collection.png).

Starts `prolip-retrieval serve` on the embedded demo model in a fresh temporary data dir,
drives the system Chromium through Playwright, and writes small palette PNGs:

    python scripts/ui_screenshots.py [--query "a red circle"] [--out docs]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1200, "height": 900}
log = logging.getLogger("ui_screenshots")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


def save_small(png: bytes, path: Path, max_height: int | None = None) -> None:
    """Crop to max_height, reduce to a 256-colour palette (UI screenshots lose nothing visible)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if max_height and image.height > max_height:
        image = image.crop((0, 0, image.width, max_height))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    log.info("wrote %s (%d x %d, %d KiB)", path, image.width, image.height, path.stat().st_size // 1024)


def take(url: str, out: Path, query: str, chromium: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        # rank by cosine first, then by calibrated probability (only results with P(match) >= 0.5):
        # the cards then show how they moved against cosine
        page.goto(f"{url}/#/search?q={query.replace(' ', '+')}&k=12&rank=cosine&p=0.5")
        expect(page.locator(".result-card")).to_have_count(12, timeout=30_000)
        page.locator("fieldset.rank-modes label", has_text="Probability").click()
        expect(page.locator(".result-status")).to_contain_text("ranked by Probability")
        page.wait_for_function("() => [...document.querySelectorAll('img.thumb')].every(i => i.complete)")
        save_small(page.screenshot(full_page=True), out / "ui-search.png", max_height=1150)
        page.mouse.move(0, 0)  # no hover highlight left where the last click was
        page.goto(f"{url}/#/collections/demo-images")
        expect(page.locator("svg.histogram")).to_be_visible(timeout=30_000)
        page.wait_for_function("() => [...document.querySelectorAll('img.thumb')].every(i => i.complete)")
        save_small(page.screenshot(full_page=True), out / "ui-collection.png")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the server")
    parser.add_argument("--model", default=None, help="model source (default: the embedded demo model)")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {key: value for key, value in os.environ.items()
               if key not in ("PROLIP_MODEL_SOURCE", "PROLIP_API_KEYS", "PROLIP_CONFIG")}
        if args.model:
            env["PROLIP_MODEL_SOURCE"] = args.model
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
                                    "--port", str(port), "--data-dir", data_dir], cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, args.timeout)
            take(url, args.out, args.query, args.chromium)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
