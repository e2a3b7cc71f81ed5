"""One pymilvus client per catalog, with Milvus errors turned into the indexer's own.

The URI decides the deployment, exactly as pymilvus does: ``http://host:19530`` is Milvus
Standalone or Distributed (or a Milvus Lite server started on a port), a local file path such
as ``./milvus.db`` starts Milvus Lite inside this process (one process per file).

Consistency: every read runs at the catalog's consistency level, ``Strong`` by default: Milvus
then answers only once its query nodes have applied every write acknowledged before the read
began, from any client, so a search through one API replica sees what another replica's ``add``
acknowledged. The price is latency: a Strong read waits for the next time tick of the WAL
(``common.timeTickInterval``, 200 ms in Milvus' default configuration) on Standalone and
Distributed. ``Bounded`` (seconds stale, no wait) or ``Session`` (read-your-own-writes per
client, i.e. per replica) trade that guarantee away for latency.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import InvalidInputError, StoreError, UnknownCollectionError

log = logging.getLogger(__name__)

CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
T = TypeVar("T")

# Milvus status codes we act on (pymilvus.exceptions.ErrorCode and milvus' merr package)
COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101


class CollectionNotLoaded(StoreError):
    """The collection is not loaded into the query nodes (a restarted Milvus Lite, a release)."""


@contextlib.contextmanager
def quiet_pymilvus() -> Iterator[None]:
    """Silence pymilvus' own error logs around a call whose failure we expect and handle (a probe)."""
    loggers = [logging.getLogger(name) for name in ("pymilvus.decorators", "pymilvus.milvus_client.milvus_client",
                                                    "pymilvus.orm.iterator")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


def describe_uri(uri: str) -> str:
    """The URI without credentials, for messages and logs."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


def translate(error: BaseException, what: str) -> Exception:
    """The indexer error for a pymilvus exception raised while doing ``what``."""
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException, ParamError

    if isinstance(error, MilvusUnavailableException):
        return StoreError(f"Milvus is unreachable ({what}): {error.message}")
    if isinstance(error, ParamError):
        return InvalidInputError(f"Milvus refused the request ({what}): {error.message}")
    if isinstance(error, MilvusException):
        message = str(error.message)
        if error.code == COLLECTION_NOT_FOUND or "collection not found" in message.lower():
            return UnknownCollectionError(f"{what}: the collection does not exist in Milvus (dropped?)")
        if error.code == COLLECTION_NOT_LOADED or "not loaded" in message.lower():
            return CollectionNotLoaded(f"{what}: {message}")
        return StoreError(f"Milvus failed ({what}): {message} (code {error.code})")
    return StoreError(f"Milvus failed ({what}): {type(error).__name__}: {error}")


def milvus_call(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: pymilvus and gRPC exceptions become StoreError / UnknownCollectionError / InvalidInputError."""
    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            from pymilvus.exceptions import MilvusException

            try:
                return method(*args, **kwargs)
            except MilvusException as error:
                raise translate(error, what) from error
            except Exception as error:
                if type(error).__module__.startswith("grpc"):
                    raise StoreError(f"Milvus is unreachable ({what}): {error}") from error
                raise

        return wrapper

    return decorate


def connect(uri: str, token: str | None = None, timeout: float = 30.0) -> Any:
    """A ``MilvusClient`` for ``uri``; StoreError when the server cannot be reached."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInputError("the Milvus URI must be a non-empty string")
    try:
        from pymilvus import MilvusClient
    except ImportError as error:  # the [milvus] extra is not installed
        raise StoreError("PROLIP_MILVUS_URI is set but pymilvus is not installed: pip install "
                         "'prolip-retrieval[milvus]'") from error
    if not is_remote(uri):
        uri = os.path.abspath(os.path.expanduser(uri))  # Milvus Lite: a local file, started in this process
    try:
        # an alias of its own: pymilvus shares one connection per URI otherwise, and closing one
        # catalog would cut every other client of that URI in this process
        return MilvusClient(uri=uri, token=token or "", timeout=timeout, alias=f"prolip-{uuid.uuid4().hex}")
    except Exception as error:
        raise StoreError(f"cannot reach Milvus at {describe_uri(uri)}: {error}") from error
