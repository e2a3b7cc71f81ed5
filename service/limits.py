"""What one request may ask for: body size, uploads, texts, k, and image decoding.

The body limit is enforced while bytes arrive (a lying or missing Content-Length changes
nothing), so an oversized upload is refused before it fills memory or disk. Images are
decoded by ``service.images`` within per-request and per-process pixel budgets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import InvalidInput, PayloadTooLarge, error_body
from .settings import COLLECTION_PATTERN, Settings

COLLECTION_NAME = re.compile(COLLECTION_PATTERN)
ITEM_ID = re.compile(r"^[^\x00-\x1f/\\]{1,128}$")
_CHUNK = 1024 * 1024


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, by header and while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_json(send, 413, error_body(
                "payload_too_large", f"request body exceeds the limit of {self.max_bytes} bytes"))
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # an HTTPException passes through FastAPI's body parsing untouched
                    raise StarletteHTTPException(413, f"request body exceeds the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)


async def _send_json(send: Send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class Limits:
    """Checks of request content against the configured limits, shared by every route."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def k(self, k: int) -> int:
        if k < 1:
            raise InvalidInput(f"k must be at least 1, got {k}")
        if k > self.settings.max_k:
            raise InvalidInput(f"k must be at most {self.settings.max_k}, got {k}")
        return k

    def texts(self, texts: Sequence[str], what: str = "texts") -> list[str]:
        if not texts:
            raise InvalidInput(f"{what}: give at least one text")
        if len(texts) > self.settings.max_texts:
            raise InvalidInput(f"{what}: at most {self.settings.max_texts} texts per request, got {len(texts)}")
        for i, text in enumerate(texts):
            self.text(text, f"{what}[{i}]")
        return list(texts)

    def text(self, text: str, what: str = "text") -> str:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{what}: must be a non-empty string")
        if len(text) > self.settings.max_text_chars:
            raise PayloadTooLarge(f"{what}: {len(text)} characters exceeds the limit of "
                                  f"{self.settings.max_text_chars}")
        if "\x00" in text:
            raise InvalidInput(f"{what}: contains a NUL character")
        return text

    def collection(self, name: str) -> str:
        if not COLLECTION_NAME.fullmatch(name or ""):
            raise InvalidInput(f"collection name {name[:80]!r} is invalid: use 1-64 letters, digits, '_' or '-'")
        return name

    def item_id(self, item_id: str) -> str:
        if not ITEM_ID.match(item_id or "") or item_id in (".", ".."):
            raise InvalidInput(f"item id {item_id[:80]!r} is invalid: 1-128 characters, no '/', '\\' or control "
                               "characters")
        return item_id

    def metadata(self, metadata: Any, what: str = "metadata") -> dict[str, Any]:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            raise InvalidInput(f"{what}: must be a JSON object")
        size = len(json.dumps(metadata, ensure_ascii=False).encode())
        if size > self.settings.max_metadata_bytes:
            raise PayloadTooLarge(f"{what}: {size} bytes of JSON exceeds the limit of "
                                  f"{self.settings.max_metadata_bytes}")
        return metadata

    def file_count(self, files: Sequence[Any], what: str = "files") -> None:
        if not files:
            raise InvalidInput(f"{what}: upload at least one file")
        if len(files) > self.settings.max_files:
            raise InvalidInput(f"{what}: at most {self.settings.max_files} files per request, got {len(files)}")

    async def read(self, upload: UploadFile, what: str = "file") -> bytes:
        """The upload's bytes, refusing more than max_upload_bytes (read in chunks, never all at once)."""
        limit = self.settings.max_upload_bytes
        chunks, total = [], 0
        while True:
            chunk = await upload.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"{what} ({upload.filename or 'upload'}) exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise InvalidInput(f"{what} ({upload.filename or 'upload'}) is empty")
        return data
